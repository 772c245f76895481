// What every heavy-tier backend does with a live guest agent, written once: commands and runCode
// with host-enforced wall clocks (interrupt or kill in the guest first; the whole sandbox ended by
// the backend when the guest does not answer), output caps counted on the host, and the file
// operations. A backend (gVisor box, microVM) supplies the channel, how a request reports the
// sandbox's death (e.g. MemoryLimitError), and how the sandbox is ended.
import { AbortedError, FileSystemError, InvalidOptionsError, LimitError, OutputLimitError, TimeoutError, withPartialResult, WorkerCrashedError } from "../../errors.js";
import type { Limits } from "../../policy/options.js";
import { ResultGate } from "../../protocol/display.js";
import type { AgentMessage, AgentRequest } from "../../protocol/agent.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { EngineExecOptions, EngineExecResult, EngineProcess, EngineRunOptions, EngineRunResult, EngineSpawnOptions } from "../engine.js";
import type { AgentClient, OutputListener } from "./agent-client.js";

/** Time the guest gets to answer a kill before the host ends the whole sandbox. */
export const GUEST_ANSWER_MS = 2000;
/** Most a caller's kill() of a background command waits for its exit frame. */
const KILL_WAIT_MS = 5000;

export type AgentFinal = Extract<AgentMessage, { type: "pong" | "exit" | "result" | "reply" }>;

/** The backend side of a session. */
export interface AgentSessionHost {
  /** The live sandbox's agent client (read at each call: a backend may swap sandboxes). */
  readonly client: AgentClient;
  /** Send a request and wait for its answer; on failure, throw why the sandbox died. */
  call(msg: AgentRequest, onOutput?: OutputListener): Promise<AgentFinal>;
  /** End the sandbox because it stopped answering; pending requests fail with `err`. */
  fail(err: Error): Promise<void>;
}

export class AgentSession {
  /**
   * @param noun what the backend's sandbox is called in messages ("sandbox", "VM").
   */
  constructor(
    private readonly host: AgentSessionHost,
    private readonly limits: Limits,
    private readonly noun: string,
  ) {}

  async exec(argv: string[], opts: EngineExecOptions): Promise<EngineExecResult> {
    return this.launch(argv, opts, false).done;
  }

  /**
   * Start a background command: resolves with its guest pid once the agent has started it. No
   * wall clock unless `timeoutMs` is given; its output is capped by limits.outputBytes as a
   * foreground command's is (killed at the cap: a result with limitHit). A command that cannot
   * start (no such program, a bad cwd) rejects with InvalidOptionsError naming why.
   */
  async spawn(argv: string[], opts: EngineSpawnOptions): Promise<EngineProcess> {
    const p = this.launch(argv, opts, true);
    const pid = await Promise.race([p.started, p.done.then(
      (r) => {
        // It ended without a start: the agent could not start it (exit 127/126 with its reason).
        const why = r.stderr.trim().split("\n").pop() ?? `exit ${r.exitCode}`;
        throw new InvalidOptionsError([{ path: /working directory/.test(why) ? "cwd" : "cmd", message: why }]);
      },
    )]);
    return {
      pid,
      output: () => p.out.soFar(),
      done: p.done,
      kill: async (signal) => {
        if (p.ended) return false;
        p.signal(signal);
        // A KILL ends it: wait for its exit frame, so a caller sees it gone (not past a guest that does not answer).
        if (signal === "KILL") await Promise.race([p.done.catch(() => undefined), new Promise((r) => setTimeout(r, KILL_WAIT_MS).unref())]);
        return true;
      },
      writeStdin: (data) => this.stdin(p.id, { data: Buffer.from(data).toString("base64") }),
      closeStdin: () => this.stdin(p.id, { close: true }),
    };
  }

  /** A `stdin` request for background exec `target`; a refusal is an InvalidOptionsError naming why. */
  private async stdin(target: number, what: { data: string } | { close: true }): Promise<void> {
    const m = await this.host.call({ type: "stdin", id: this.host.client.newId(), target, ...what });
    if (m.type !== "reply") throw new WorkerCrashedError("the guest agent answered a stdin request with the wrong message");
    if (!m.ok) throw new InvalidOptionsError([{ path: "stdin", message: `${m.errno ?? "EIO"}: ${m.message ?? "refused"}` }]);
  }

  /**
   * Start a command; `done` settles with its result. Foreground (exec) and background (spawn)
   * differ only in that a background one reports its pid (`started`) and has a wall clock only
   * when asked for one.
   */
  private launch(argv: string[], opts: EngineExecOptions | EngineSpawnOptions, background: boolean) {
    const { limits } = this;
    const c = this.host.client;
    const id = c.newId();
    const out = new OutputCollector(limits.outputBytes, opts.onStdout, opts.onStderr);
    const t0 = performance.now();
    let stopped: Error | undefined;
    let hardTimer: NodeJS.Timeout | undefined;
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    let onStarted!: (pid: number) => void;
    const started = new Promise<number>((res) => (onStarted = res));
    const unwatch = background ? c.watchStarted(id, (pid) => onStarted(pid)) : () => undefined;
    const signal = (sig: "KILL" | "TERM" | "INT") => c.send({ type: "kill", id: c.newId(), target: id, signal: sig });
    const stop = (err: Error) => {
      if (stopped) return;
      stopped = err;
      signal("KILL");
      hardTimer = setTimeout(() => void this.host.fail(err), GUEST_ANSWER_MS);
    };
    const onAbort = () => stop(new AbortedError("command aborted by the caller's signal; it was killed"));
    const done = (async (): Promise<EngineExecResult> => {
      if (opts.signal?.aborted) throw new AbortedError();
      const timeoutMs = opts.timeoutMs;
      if (timeoutMs !== undefined) timer = setTimeout(() => stop(new TimeoutError(timeoutMs, "the command was killed; the sandbox lives on")), timeoutMs);
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      out.onLimit = () => stop(new OutputLimitError(limits.outputBytes, "the command was killed; the sandbox lives on"));
      try {
        const req: AgentRequest = { type: "exec", id, argv };
        if (opts.cwd !== undefined) req.cwd = opts.cwd;
        if (opts.env !== undefined) req.env = opts.env;
        if (opts.stdin !== undefined) req.stdin = Buffer.from(opts.stdin).toString("base64");
        if (background) req.background = true;
        if (background && (opts as EngineSpawnOptions).stdinOpen) req.stdinOpen = true;
        let m: AgentFinal;
        try {
          m = await this.host.call(req, out.listener);
        } catch (e) {
          throw withPartialResult(e, out.finish());
        }
        const { stdout, stderr } = out.finish();
        if (stopped instanceof LimitError) {
          // Killed at a limit the sandbox survives: a result with the output so far, like runCode's soft limits.
          return { exitCode: 137, stdout, stderr, signal: "SIGKILL", durationMs: performance.now() - t0, limitHit: stopped.limit };
        }
        if (stopped) throw withPartialResult(stopped, { stdout, stderr });
        if (m.type !== "exit") throw new WorkerCrashedError("the guest agent answered a command with the wrong message");
        // The command could not be started (127) or the agent's handler failed (126).
        if (m.error) return { exitCode: m.exitCode, stdout, stderr: stderr + `agentbox: cannot run ${argv[0] ?? ""}: ${m.error}\n`, signal: null, durationMs: performance.now() - t0 };
        const result: EngineExecResult = { exitCode: m.exitCode, stdout, stderr, signal: m.signal, durationMs: performance.now() - t0 };
        if (m.oomKilled) result.limitHit = "memoryMb";
        return result;
      } finally {
        ended = true;
        unwatch();
        clearTimeout(timer);
        clearTimeout(hardTimer);
        opts.signal?.removeEventListener("abort", onAbort);
      }
    })();
    return {
      id,
      done,
      started,
      out,
      signal,
      get ended() {
        return ended;
      },
    };
  }

  async run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    const { limits } = this;
    const c = this.host.client;
    const id = c.newId();
    const out = new OutputCollector(limits.outputBytes, opts.onStdout, opts.onStderr);
    // Rich results share the output cap with stdout and stderr; each is checked as its frame
    // arrives and passed on at once; a note for one dropped goes to stderr where it happened.
    const shown = new ResultGate({ room: () => limits.outputBytes - out.bytes, charge: (n) => (out.bytes += n) }, (text) => out.note(text), opts.onResult);
    const unwatch = c.watchDisplays(id, (raw) => shown.add(raw));
    let reason: "timeout" | "abort" | "output" | undefined;
    const timers: NodeJS.Timeout[] = [];
    const interrupt = (why: "timeout" | "abort" | "output") => {
      if (reason) return;
      reason = why;
      c.send({ type: "interrupt", id: c.newId(), target: id, hard: false });
      timers.push(setTimeout(() => c.send({ type: "interrupt", id: c.newId(), target: id, hard: true }), limits.graceMs));
      timers.push(setTimeout(() => void this.host.fail(this.limitError(why, opts.timeoutMs, `the guest did not answer and the ${this.noun} was killed`)), limits.graceMs + GUEST_ANSWER_MS));
    };
    timers.push(setTimeout(() => interrupt("timeout"), opts.timeoutMs));
    const onAbort = () => interrupt("abort");
    if (opts.signal?.aborted) throw new AbortedError();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    out.onLimit = () => interrupt("output");
    try {
      let m: AgentFinal;
      try {
        m = await this.host.call({ type: "run", id, code, valueCap: limits.outputBytes + 1 /* one past the cap: a cut value shows */ }, out.listener);
      } catch (e) {
        throw withPartialResult(e, out.finish());
      }
      if (m.type !== "result") throw new WorkerCrashedError("the guest agent answered a run with the wrong message");
      // What the REPL did not send as it happened comes with the result; it follows, in order.
      if (Array.isArray(m.results)) for (const raw of m.results) shown.add(raw);
      const { stdout, stderr } = out.finish();
      if (m.restarted && reason) throw withPartialResult(this.limitError(reason, opts.timeoutMs, "the run ignored the interrupt; the Python REPL was restarted (its variables are lost), the sandbox lives on"), { stdout, stderr });
      let value = m.value;
      let limitHit: EngineRunResult["limitHit"] = reason === "timeout" ? "timeoutMs" : reason === "output" ? "outputBytes" : null;
      // Killed for lack of memory in the guest, or Python's MemoryError (a process memory limit).
      if (!limitHit && (m.oomKilled || m.error?.name === "MemoryError")) limitHit = "memoryMb";
      if (value !== null && out.bytes + Buffer.byteLength(value) > limits.outputBytes) {
        value = Buffer.from(value).subarray(0, Math.max(0, limits.outputBytes - out.bytes)).toString("utf8");
        limitHit = "outputBytes";
      }
      if (reason === "abort") throw withPartialResult(new AbortedError(), { stdout, stderr });
      if (shown.cut || m.resultsCut) limitHit ??= "outputBytes";
      return { stdout, stderr, value, error: m.error, limitHit, durationMs: m.durationMs, vfsDigest: m.vfsDigest ?? "", results: shown.results };
    } finally {
      unwatch();
      for (const t of timers) clearTimeout(t);
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  async writeFile(p: string, data: Uint8Array): Promise<void> {
    await this.fs({ op: "write", path: p, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64") });
  }

  async readFile(p: string): Promise<Uint8Array> {
    const r = await this.fs({ op: "read", path: p });
    return new Uint8Array(Buffer.from(r.data ?? "", "base64"));
  }

  async list(p: string): Promise<DirEntry[]> {
    const entries = (await this.fs({ op: "list", path: p })).entries ?? [];
    // The guest sorts; the host does not trust it to.
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async remove(p: string): Promise<void> {
    await this.fs({ op: "remove", path: p });
  }

  async exists(p: string): Promise<boolean> {
    return (await this.fs({ op: "exists", path: p })).exists ?? false;
  }

  async makeDir(p: string): Promise<void> {
    await this.fs({ op: "mkdir", path: p });
  }

  private limitError(reason: "timeout" | "abort" | "output", timeoutMs: number, detail: string): Error {
    if (reason === "timeout") return new TimeoutError(timeoutMs, detail);
    if (reason === "output") return new OutputLimitError(this.limits.outputBytes, detail);
    return new AbortedError(`run aborted by the caller's signal; ${detail}`);
  }

  private async fs(req: Omit<Extract<AgentRequest, { type: "fs" }>, "type" | "id">) {
    const m = await this.host.call({ type: "fs", id: this.host.client.newId(), ...req });
    if (m.type !== "reply") throw new WorkerCrashedError("the guest agent answered a file operation with the wrong message");
    if (!m.ok) throw new FileSystemError(req.path, m.errno ?? "EIO", m.message ?? "file system error");
    return m;
  }
}

/** Streams a command's output to the caller while counting it against limits.outputBytes. */
class OutputCollector {
  bytes = 0;
  onLimit: (() => void) | undefined;
  private readonly parts = { stdout: [] as string[], stderr: [] as string[] };
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  private hit = false;

  constructor(
    private readonly cap: number,
    private readonly onStdout: ((s: string) => void) | undefined,
    private readonly onStderr: ((s: string) => void) | undefined,
  ) {}

  readonly listener = (stream: "stdout" | "stderr", data: Buffer): void => {
    if (this.hit) return;
    let chunk = data;
    if (this.bytes + chunk.length > this.cap) {
      chunk = chunk.subarray(0, this.cap - this.bytes);
      this.hit = true;
    }
    this.bytes += chunk.length;
    const text = this.decoders[stream].decode(chunk, { stream: true });
    if (text) {
      this.parts[stream].push(text);
      (stream === "stdout" ? this.onStdout : this.onStderr)?.(text);
    }
    if (this.hit) this.onLimit?.();
  };

  /** Our own line on stderr (a dropped result): the caller sees it where it happened; not counted. */
  note(text: string): void {
    this.parts.stderr.push(text);
    this.onStderr?.(text);
  }

  /** What has come so far (a character cut mid-way shows once its rest arrives). */
  soFar(): { stdout: string; stderr: string } {
    return { stdout: this.parts.stdout.join(""), stderr: this.parts.stderr.join("") };
  }

  finish(): { stdout: string; stderr: string } {
    for (const s of ["stdout", "stderr"] as const) {
      const tail = this.decoders[s].decode();
      if (tail) this.parts[s].push(tail);
    }
    return { stdout: this.parts.stdout.join(""), stderr: this.parts.stderr.join("") };
  }
}
