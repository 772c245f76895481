// The heavy tier on gVisor, host side: drives one GvisorBox through its guest agent. Commands
// and runCode get host-enforced wall-clock limits (interrupt or kill in the guest first, `runsc
// kill` of the whole sandbox when the guest does not answer) and output caps; a cgroup OOM ends
// the sandbox with MemoryLimitError. Snapshots are `runsc checkpoint` images, restorable many times.
import { randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  AbortedError,
  FileSystemError,
  OutputLimitError,
  TimeoutError,
  WorkerCrashedError,
} from "../../errors.js";
import type { Limits } from "../../policy/options.js";
import type { AgentRequest } from "../../protocol/agent.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { Engine, EngineExecOptions, EngineExecResult, EngineRunOptions, EngineRunResult, EngineSnapshot } from "../engine.js";
import type { WorkerPool } from "../pool/pool.js";
import { requireImage } from "../heavy/image.js";
import { GvisorBox, specKey, type BoxSpec } from "./box.js";

export interface GvisorEngineConfig {
  limits: Limits;
  env: Record<string, string>;
  /** Seeds Python's `random` in runCode (the heavy tier has no virtual clock or seeded kernel). */
  seed: number | null;
  /** Extra Debian packages: selects the image built with them. */
  packages: string[];
}

/** Time the guest gets to answer a kill before the host ends the whole sandbox. */
const GUEST_ANSWER_MS = 2000;

export function boxSpec(config: GvisorEngineConfig): BoxSpec {
  const { limits } = config;
  return { image: requireImage(config.packages), memoryMb: limits.memoryMb, cpus: limits.cpus, diskMb: limits.diskMb };
}

export { specKey };

export class GvisorEngine implements Engine {
  private closed: string | undefined;

  private constructor(
    private box: GvisorBox,
    private readonly config: GvisorEngineConfig,
  ) {
    box.onDeath = (e) => {
      this.closed ??= e.message;
    };
  }

  /** Take a ready box from `pool` when there is one, else start one; then configure it. */
  static async start(config: GvisorEngineConfig, pool: WorkerPool<GvisorBox> | undefined): Promise<GvisorEngine> {
    const spec = boxSpec(config);
    const box = pool?.take() ?? (await GvisorBox.start(spec));
    return GvisorEngine.adopt(box, config);
  }

  /** Configure a started box for this sandbox and wrap it. @internal */
  static async adopt(box: GvisorBox, config: GvisorEngineConfig): Promise<GvisorEngine> {
    box.ref();
    const engine = new GvisorEngine(box, config);
    try {
      await engine.configure(config.seed);
    } catch (e) {
      await engine.dispose("start failed");
      throw e;
    }
    return engine;
  }

  private async configure(seed: number | null): Promise<void> {
    const c = this.box.client;
    await this.call({ type: "configure", id: c.newId(), env: this.config.env, seed });
  }

  get closedReason(): string | undefined {
    return this.closed ?? (this.box.alive ? undefined : (this.box.failure?.message ?? "the sandbox exited"));
  }

  get pid(): number | undefined {
    return this.box.pid;
  }

  /** The container id and private directory (for tests that check nothing is left behind). */
  get resources(): { containerId: string; dir: string; cgroupDirs: string[] } {
    return { containerId: this.box.containerId, dir: this.box.dir, cgroupDirs: this.box.cgroup.existing() };
  }

  async exec(argv: string[], opts: EngineExecOptions): Promise<EngineExecResult> {
    const { limits } = this.config;
    const c = this.box.client;
    const id = c.newId();
    const out = new OutputCollector(limits.outputBytes, opts.onStdout, opts.onStderr);
    const t0 = performance.now();
    let stopped: Error | undefined;
    const stop = (err: Error) => {
      if (stopped) return;
      stopped = err;
      c.send({ type: "kill", id: c.newId(), target: id, signal: "KILL" });
      hardTimer = setTimeout(() => void this.fail(err), GUEST_ANSWER_MS);
    };
    let hardTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => stop(new TimeoutError(opts.timeoutMs, "the command was killed; the sandbox lives on")), opts.timeoutMs);
    const onAbort = () => stop(new AbortedError("command aborted by the caller's signal; it was killed"));
    if (opts.signal?.aborted) throw new AbortedError();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    out.onLimit = () => stop(new OutputLimitError(limits.outputBytes, "the command was killed; the sandbox lives on"));
    try {
      const req: AgentRequest = { type: "exec", id, argv };
      if (opts.cwd !== undefined) req.cwd = opts.cwd;
      if (opts.env !== undefined) req.env = opts.env;
      if (opts.stdin !== undefined) req.stdin = Buffer.from(opts.stdin).toString("base64");
      const m = await this.call(req, out.listener);
      if (stopped) throw stopped;
      if (m.type !== "exit") throw new WorkerCrashedError("the guest agent answered a command with the wrong message");
      const { stdout, stderr } = out.finish();
      if (m.error) return { exitCode: m.exitCode, stdout, stderr: stderr + `agentbox: cannot run ${argv[0] ?? ""}: ${m.error}\n`, signal: null, durationMs: performance.now() - t0 };
      return { exitCode: m.exitCode, stdout, stderr, signal: m.signal, durationMs: performance.now() - t0 };
    } finally {
      clearTimeout(timer);
      clearTimeout(hardTimer);
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  async run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    const { limits } = this.config;
    const c = this.box.client;
    const id = c.newId();
    const out = new OutputCollector(limits.outputBytes, opts.onStdout, opts.onStderr);
    let reason: "timeout" | "abort" | "output" | undefined;
    const timers: NodeJS.Timeout[] = [];
    const interrupt = (why: "timeout" | "abort" | "output") => {
      if (reason) return;
      reason = why;
      c.send({ type: "interrupt", id: c.newId(), target: id, hard: false });
      timers.push(setTimeout(() => c.send({ type: "interrupt", id: c.newId(), target: id, hard: true }), limits.graceMs));
      timers.push(setTimeout(() => void this.fail(this.limitError(why, opts.timeoutMs, "the guest did not answer and the sandbox was killed")), limits.graceMs + GUEST_ANSWER_MS));
    };
    timers.push(setTimeout(() => interrupt("timeout"), opts.timeoutMs));
    const onAbort = () => interrupt("abort");
    if (opts.signal?.aborted) throw new AbortedError();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    out.onLimit = () => interrupt("output");
    try {
      const m = await this.call({ type: "run", id, code, valueCap: limits.outputBytes }, out.listener);
      if (m.type !== "result") throw new WorkerCrashedError("the guest agent answered a run with the wrong message");
      if (m.restarted && reason) throw this.limitError(reason, opts.timeoutMs, "the run ignored the interrupt; the Python REPL was restarted (its variables are lost), the sandbox lives on");
      const { stdout, stderr } = out.finish();
      let value = m.value;
      let limitHit: EngineRunResult["limitHit"] = reason === "timeout" ? "timeoutMs" : reason === "output" ? "outputBytes" : null;
      if (value !== null && out.bytes + Buffer.byteLength(value) > limits.outputBytes) {
        value = Buffer.from(value).subarray(0, Math.max(0, limits.outputBytes - out.bytes)).toString("utf8");
        limitHit = "outputBytes";
      }
      if (reason === "abort") throw new AbortedError();
      return { stdout, stderr, value, error: m.error, limitHit, durationMs: m.durationMs, vfsDigest: "" };
    } finally {
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

  /** Checkpoint the sandbox and carry on from the checkpoint (gVisor stops a checkpointed container). */
  async snapshot(): Promise<EngineSnapshot> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-snapshot-"));
    const old = this.box;
    try {
      await old.checkpoint(dir);
      this.box = await GvisorBox.restore(old.spec, dir);
      this.box.onDeath = (e) => {
        this.closed ??= e.message;
      };
    } catch (e) {
      this.closed ??= `snapshot failed: ${(e as Error).message}`;
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return new GvisorSnapshot(dir, old.spec, this.config);
  }

  async dispose(reason = "killed"): Promise<void> {
    this.closed ??= reason;
    await this.box.dispose(new WorkerCrashedError(`sandbox closed: ${reason}`));
  }

  private limitError(reason: "timeout" | "abort" | "output", timeoutMs: number, detail: string): Error {
    if (reason === "timeout") return new TimeoutError(timeoutMs, detail);
    if (reason === "output") return new OutputLimitError(this.config.limits.outputBytes, detail);
    return new AbortedError(`run aborted by the caller's signal; ${detail}`);
  }

  /** End the sandbox because it stopped answering; pending requests fail with `err`. */
  private async fail(err: Error): Promise<void> {
    this.closed ??= err.message;
    this.box.client.fail(err);
    await this.box.dispose(err);
  }

  private async fs(req: Omit<Extract<AgentRequest, { type: "fs" }>, "type" | "id">) {
    const m = await this.call({ type: "fs", id: this.box.client.newId(), ...req });
    if (m.type !== "reply") throw new WorkerCrashedError("the guest agent answered a file operation with the wrong message");
    if (!m.ok) throw new FileSystemError(req.path, m.errno ?? "EIO", m.message ?? "file system error");
    return m;
  }

  /** A request whose failure, when the box died, reports why it died (e.g. MemoryLimitError). */
  private async call(msg: AgentRequest, onOutput?: (s: "stdout" | "stderr", d: Buffer) => void) {
    const box = this.box;
    try {
      return await box.client.request(msg, onOutput);
    } catch (e) {
      // Wait for the death's cause (OOM count) before reporting.
      if (!box.failure) await Promise.race([box.exited$(), new Promise((r) => setTimeout(r, 1500))]);
      const why = box.failure ?? (e as Error);
      this.closed ??= why.message;
      void box.dispose(why);
      throw why;
    }
  }
}

class GvisorSnapshot implements EngineSnapshot {
  private removed = false;
  constructor(
    private readonly dir: string,
    private readonly spec: BoxSpec,
    private readonly config: GvisorEngineConfig,
  ) {}

  async restore(): Promise<Engine> {
    if (this.removed) throw new WorkerCrashedError("this snapshot was removed");
    const box = await GvisorBox.restore(this.spec, this.dir);
    // Clones must not share the REPL's random state.
    const seed = this.config.seed ?? randomInt(0, 2 ** 48 - 1);
    return GvisorEngine.adopt(box, { ...this.config, seed });
  }

  async remove(): Promise<void> {
    this.removed = true;
    fs.rmSync(this.dir, { recursive: true, force: true });
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

  finish(): { stdout: string; stderr: string } {
    for (const s of ["stdout", "stderr"] as const) {
      const tail = this.decoders[s].decode();
      if (tail) this.parts[s].push(tail);
    }
    return { stdout: this.parts.stdout.join(""), stderr: this.parts.stderr.join("") };
  }
}
