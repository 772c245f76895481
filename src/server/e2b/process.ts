// envd's process service (process.Process) over Connect: commands on the sandbox's heavy tier.
//
// Every Start runs as an agentbox background command (sb.commands.run(argv, { background: true }))
// whose output is fanned out to the streams following it, as envd does: the Start stream, then any
// Connect streams. As in envd, the process does not depend on its stream: a client that hangs up
// (the SDK's `background: true` handle being dropped, `disconnect()`) leaves it running, and
// Connect/List/SendSignal find it by pid or tag. The process's time limit is the Start request's
// Connect-Timeout-Ms (the SDK's `timeoutMs`, 60 s unless given, 0 = none): past it the command is
// killed and the stream ends with deadline_exceeded (the SDK's TimeoutError), as envd's does.
// A Connect stream's own deadline only ends that stream.
//
// Users: agentbox's guest agent runs every command as the unprivileged `user` (uid 1000, no
// capabilities: guest/agent.py drops them before exec), so there is no root in the sandbox. E2B's
// `user: "root"` is accepted and runs as `user` (commands that need root fail as a non-root user's
// would); any other user name is refused.
//
// Stdin: Start with `stdin: true` keeps the command's stdin open (agentbox's `stdinOpen`);
// SendInput writes to it, CloseStdin closes it (EOF). Without it the command's stdin is /dev/null.
// Not supported: PTYs (Start with `pty`, Update, SendInput's `pty`) and StreamInput (client
// streaming, which the SDKs do not use for commands); they answer `unimplemented` with the reason.
import type { Context, Hono } from "hono";
import { z } from "zod";
import { LimitError, SandboxClosedError, type CommandHandle, type Sandbox } from "../../index.js";
import { parseOptions } from "../../policy/options.js";
import type { CommandResult } from "../../sandbox/sandbox.js";
import type { Entry } from "../registry.js";
import { ConnectError, keepaliveMs, serverStream, unary, type RpcOptions, type StreamSink } from "./connect.js";
import type { E2bOptions, SandboxEnv } from "./index.js";

const SERVICE = "process.Process";

/** How often a Connect stream to a command agentbox's native API started polls its output. */
const POLL_MS = 100;

const MAX_ARG = 1 << 20;

const processConfigSchema = z
  .object({
    cmd: z.string().min(1).max(4096),
    args: z.array(z.string().max(MAX_ARG)).max(4096).optional(),
    envs: z.record(z.string().min(1).max(256), z.string().max(65_536)).refine((m) => Object.keys(m).length <= 1024, "at most 1024 variables").optional(),
    cwd: z.string().max(4096).optional(),
  })
  .loose();

const startSchema = z
  .object({
    process: processConfigSchema,
    pty: z.unknown().optional(),
    tag: z.string().max(256).optional(),
    stdin: z.boolean().optional(),
  })
  .loose();

/** uint32 in protobuf JSON: a number, or a string of digits. */
const pidSchema = z.union([z.int().min(1).max(0xffff_ffff), z.string().regex(/^[1-9][0-9]{0,9}$/).transform(Number)]);

/** ProcessSelector: its oneof `selector` is `pid` or `tag` in JSON. */
const selectorSchema = z
  .object({ pid: pidSchema.optional(), tag: z.string().min(1).max(256).optional() })
  .loose()
  .refine((s) => (s.pid === undefined) !== (s.tag === undefined), "give exactly one of pid and tag");

const selectedSchema = z.object({ process: selectorSchema }).loose();

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const sendInputSchema = z
  .object({
    process: selectorSchema,
    input: z.object({ stdin: z.string().regex(BASE64, "must be base64").optional(), pty: z.string().optional() }).loose(),
  })
  .loose();

const signalSchema = z.object({ process: selectorSchema, signal: z.union([z.string().max(64), z.int()]).optional() }).loose();

/** process.Signal, by JSON name and number, as agentbox's kill() names it. */
const SIGNALS: Record<string, "KILL" | "TERM"> = { SIGNAL_SIGKILL: "KILL", "9": "KILL", SIGNAL_SIGTERM: "TERM", "15": "TERM" };

/** What a process's followers are told. */
type ProcEvent = { kind: "data"; stream: "stdout" | "stderr"; text: string } | { kind: "end"; result: CommandResult } | { kind: "error"; error: unknown };

/** A command started by Start: its E2B config and the streams following its output. */
interface Proc {
  readonly pid: number;
  readonly handle: CommandHandle;
  readonly tag: string | undefined;
  readonly config: { cmd: string; args: string[]; envs: Record<string, string>; cwd?: string };
  /** Events before the Start stream attached (output can come before the handle does). */
  backlog: ProcEvent[] | undefined;
  readonly listeners: Set<(e: ProcEvent) => void>;
  ended: boolean;
}

/** The E2B-started commands of each sandbox, by guest pid, while they run. */
const procsBySandbox = new WeakMap<Sandbox, Map<number, Proc>>();

function procsOf(sb: Sandbox): Map<number, Proc> {
  let m = procsBySandbox.get(sb);
  if (!m) procsBySandbox.set(sb, (m = new Map()));
  return m;
}

/** Processes need a shell: refused on the nano tier (WebAssembly interpreters, no Linux userland). */
function heavyOnly(entry: Entry): void {
  if (entry.sandbox.options.tier === "nano") {
    throw new ConnectError(
      "unimplemented",
      `commands need agentbox's heavy tier (a Linux userland with a shell); this sandbox runs on the nano tier (a WebAssembly ${entry.sandbox.options.language} interpreter, template agentbox-${entry.sandbox.options.language}): create it from template "base" or "code-interpreter-v1", or run code with runCode`,
    );
  }
}

/** The user of `Authorization: Basic base64(user:)` (the SDK's `user` option); see the header comment. */
function checkUser(header: string | undefined): void {
  if (!header) return;
  const m = /^Basic\s+([A-Za-z0-9+/=]{0,400})\s*$/i.exec(header);
  if (!m) throw new ConnectError("invalid_argument", "Authorization must be Basic base64(<user>:)");
  const user = Buffer.from(m[1]!, "base64").toString("utf8").split(":")[0] ?? "";
  if (user !== "" && user !== "user" && user !== "root") {
    throw new ConnectError("invalid_argument", `user ${JSON.stringify(user.slice(0, 64))} does not exist in this sandbox (agentbox runs commands as "user", uid 1000; "root" is accepted and runs as "user")`);
  }
}

/** Connect-Timeout-Ms: absent or 0 = no limit; over the key's maxRunMs quota is refused as the native API does. */
function deadlineOf(c: Context<SandboxEnv>): number | undefined {
  const raw = c.req.header("connect-timeout-ms");
  if (raw === undefined || raw.trim() === "") return undefined;
  if (!/^[0-9]{1,10}$/.test(raw.trim())) throw new ConnectError("invalid_argument", "Connect-Timeout-Ms must be a non-negative integer of at most 10 digits");
  const ms = Number(raw.trim());
  if (ms === 0) return undefined;
  const max = c.env.who.quota.maxRunMs;
  if (ms > max) throw new ConnectError("invalid_argument", `timeoutMs ${ms} is over this API key's quota of ${max} (maxRunMs)`);
  return ms;
}

/** envd's EndEvent: Go's os.ProcessState (-1 and "signal: killed" for a signal), error = its Wait() error. */
function endEvent(r: CommandResult): Record<string, unknown> {
  if (r.signal) {
    const name = SIGNAL_TEXT[r.signal] ?? r.signal.toLowerCase();
    let error = `signal: ${name}`;
    if (r.limitHit === "outputBytes") error += " (agentbox: the command's output went over the sandbox's limits.outputBytes)";
    else if (r.limitHit === "memoryMb") error += " (agentbox: the sandbox ran out of memory, limits.memoryMb)";
    return { exitCode: -1, exited: false, status: `signal: ${name}`, error };
  }
  const end: Record<string, unknown> = { exitCode: r.exitCode, exited: true, status: `exit status ${r.exitCode}` };
  if (r.exitCode !== 0) end.error = `exit status ${r.exitCode}`;
  if (r.limitHit) end.error = `exit status ${r.exitCode} (agentbox: killed, ${r.limitHit === "outputBytes" ? "its output went over limits.outputBytes" : r.limitHit === "memoryMb" ? "out of memory, limits.memoryMb" : `limit ${r.limitHit}`})`;
  return end;
}

const SIGNAL_TEXT: Record<string, string> = { SIGKILL: "killed", SIGTERM: "terminated", SIGINT: "interrupt", SIGHUP: "hangup", SIGPIPE: "broken pipe", SIGSEGV: "segmentation fault", SIGABRT: "aborted" };

function dataEvent(stream: "stdout" | "stderr", text: string): unknown {
  return { event: { data: { [stream]: Buffer.from(text, "utf8").toString("base64") } } };
}

/** A sandbox ending under a command: the SDK reads unavailable as "the sandbox is not running". */
function endedError(e: unknown): unknown {
  if (e instanceof SandboxClosedError || (e instanceof LimitError && e.limit !== "timeoutMs")) return new ConnectError("unavailable", `the sandbox ended while the command ran: ${e.message}`);
  return e;
}

/**
 * Send `proc`'s events to `sink` until it ends (its end event, or the error that ended it), the
 * client hangs up (the process runs on), or `deadlineMs` passes (deadline_exceeded; the process
 * runs on). A command killed at its own time limit ends the stream with deadline_exceeded.
 */
function follow(proc: Proc, sink: StreamSink, o: { keepaliveMs: number; deadlineMs?: number | undefined; timeoutMs?: number | undefined }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const stop = () => {
      done = true;
      clearInterval(keepalive);
      clearTimeout(deadline);
      proc.listeners.delete(onEvent);
      sink.signal.removeEventListener("abort", onAbort);
    };
    const onEvent = (e: ProcEvent) => {
      if (done) return;
      if (e.kind === "data") return sink.send(dataEvent(e.stream, e.text));
      stop();
      if (e.kind === "error") return reject(endedError(e.error));
      if (e.result.limitHit === "timeoutMs") {
        return reject(new ConnectError("deadline_exceeded", `the command ran past its time limit of ${o.timeoutMs ?? "?"} ms (the SDK's timeoutMs, sent as Connect-Timeout-Ms) and was killed`));
      }
      sink.send({ event: { end: endEvent(e.result) } });
      resolve();
    };
    const onAbort = () => {
      stop();
      resolve();
    };
    const keepalive = setInterval(() => sink.send({ event: { keepalive: {} } }), o.keepaliveMs);
    const deadline = o.deadlineMs === undefined ? undefined : setTimeout(() => {
      stop();
      reject(new ConnectError("deadline_exceeded", `the stream ran past its deadline of ${o.deadlineMs} ms (Connect-Timeout-Ms); the process runs on`));
    }, o.deadlineMs);
    proc.listeners.add(onEvent);
    const backlog = proc.backlog;
    proc.backlog = undefined;
    for (const e of backlog ?? []) onEvent(e);
    if (done) return;
    if (proc.ended) {
      // ended before this stream attached and its end event went to nobody (Connect after a race)
      stop();
      reject(new ConnectError("not_found", `process with pid ${proc.pid} not found (it has ended)`));
      return;
    }
    sink.signal.addEventListener("abort", onAbort, { once: true });
    if (sink.signal.aborted) onAbort();
  });
}

/** Start a command in the background with its output fanned out to its followers. */
async function startProc(sb: Sandbox, req: z.output<typeof startSchema>, timeoutMs: number | undefined): Promise<Proc> {
  const cfg = req.process;
  const argv = [cfg.cmd, ...(cfg.args ?? [])];
  // Output can come before the handle (and so the Proc) does: kept in `early` until then.
  const made: { proc?: Proc } = {};
  const early: ProcEvent[] = [];
  const emit = (e: ProcEvent) => {
    const proc = made.proc;
    if (!proc) return void early.push(e);
    if (proc.backlog) return void proc.backlog.push(e);
    for (const l of [...proc.listeners]) l(e);
  };
  const opts: Parameters<Sandbox["commands"]["run"]>[1] & { background: true } = {
    background: true,
    onStdout: (t) => emit({ kind: "data", stream: "stdout", text: t }),
    onStderr: (t) => emit({ kind: "data", stream: "stderr", text: t }),
  };
  if (timeoutMs !== undefined) opts.timeoutMs = timeoutMs;
  if (cfg.cwd) opts.cwd = cfg.cwd;
  if (cfg.envs && Object.keys(cfg.envs).length > 0) opts.env = cfg.envs;
  if (req.stdin) opts.stdinOpen = true;
  const handle = await sb.commands.run(argv, opts);
  const config: Proc["config"] = { cmd: cfg.cmd, args: cfg.args ?? [], envs: cfg.envs ?? {} };
  if (cfg.cwd) config.cwd = cfg.cwd;
  const p: Proc = { pid: handle.pid, handle, tag: req.tag, config, backlog: early, listeners: new Set(), ended: false };
  made.proc = p;
  const mine = procsOf(sb);
  mine.set(p.pid, p);
  const finish = (e: ProcEvent) => {
    p.ended = true;
    if (mine.get(p.pid) === p) mine.delete(p.pid);
    emit(e);
  };
  handle.wait().then(
    (result) => finish({ kind: "end", result }),
    (error: unknown) => finish({ kind: "error", error }),
  );
  return p;
}

/** The E2B-started process, or the native background command, that the selector names. */
function select(sb: Sandbox, sel: z.output<typeof selectorSchema>): { proc?: Proc; handle: CommandHandle } {
  const mine = procsOf(sb);
  if (sel.pid !== undefined) {
    const p = mine.get(sel.pid);
    if (p && !p.ended) return { proc: p, handle: p.handle };
    const h = sb.commands.get(sel.pid);
    if (h) return { handle: h };
    throw new ConnectError("not_found", `process with pid ${sel.pid} not found`);
  }
  const p = [...mine.values()].find((x) => x.tag === sel.tag && !x.ended);
  if (p) return { proc: p, handle: p.handle };
  throw new ConnectError("not_found", `process with tag ${JSON.stringify(sel.tag)} not found`);
}

/**
 * Follow a background command this surface did not start (agentbox's native API did): its output
 * is read from the handle as it grows (stdout and stderr each in order, not interleaved exactly).
 */
async function followNative(handle: CommandHandle, sink: StreamSink, o: { keepaliveMs: number; deadlineMs?: number | undefined }): Promise<void> {
  let out = handle.stdout.length;
  let err = handle.stderr.length;
  const flush = () => {
    const s = handle.stdout;
    const e = handle.stderr;
    if (s.length > out) sink.send(dataEvent("stdout", s.slice(out)));
    if (e.length > err) sink.send(dataEvent("stderr", e.slice(err)));
    out = Math.max(out, s.length);
    err = Math.max(err, e.length);
  };
  const start = Date.now();
  let lastSent = start;
  let result: CommandResult | undefined;
  let failure: unknown;
  let settled = false;
  handle.wait().then(
    (r) => {
      result = r;
      settled = true;
    },
    (e: unknown) => {
      failure = e;
      settled = true;
    },
  );
  while (!sink.signal.aborted) {
    if (o.deadlineMs !== undefined && Date.now() - start > o.deadlineMs) throw new ConnectError("deadline_exceeded", `the stream ran past its deadline of ${o.deadlineMs} ms (Connect-Timeout-Ms); the process runs on`);
    flush();
    if (settled) {
      if (failure !== undefined || !result) throw endedError(failure);
      if (result.limitHit === "timeoutMs") throw new ConnectError("deadline_exceeded", "the command ran past its time limit and was killed");
      sink.send({ event: { end: endEvent(result) } });
      return;
    }
    if (Date.now() - lastSent >= o.keepaliveMs) {
      sink.send({ event: { keepalive: {} } });
      lastSent = Date.now();
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

export function registerProcess(app: Hono<SandboxEnv>, o: E2bOptions): void {
  const ro: RpcOptions = { maxBytes: o.maxJsonBytes, log: o.log };
  const { registry } = o;

  serverStream(app, SERVICE, "Start", ro, async (raw, sink, c) => {
    const { entry } = c.env;
    heavyOnly(entry);
    const req = parseOptions(startSchema, raw);
    if (req.pty !== undefined && req.pty !== null) throw new ConnectError("unimplemented", "PTYs are not supported by agentbox (sandbox.pty): run commands with sandbox.commands");
    checkUser(c.req.header("authorization"));
    const timeoutMs = deadlineOf(c);
    const ka = keepaliveMs(c.req.header("keepalive-ping-interval"));
    await registry.use(entry, async (sb) => {
      const proc = await startProc(sb, req, timeoutMs);
      sink.send({ event: { start: { pid: proc.pid } } });
      await follow(proc, sink, { keepaliveMs: ka, timeoutMs });
    });
  });

  serverStream(app, SERVICE, "Connect", ro, async (raw, sink, c) => {
    const { entry } = c.env;
    heavyOnly(entry);
    const req = parseOptions(selectedSchema, raw);
    const deadlineMs = deadlineOf(c);
    const ka = keepaliveMs(c.req.header("keepalive-ping-interval"));
    await registry.use(entry, async (sb) => {
      const { proc, handle } = select(sb, req.process);
      sink.send({ event: { start: { pid: handle.pid } } });
      if (proc) await follow(proc, sink, { keepaliveMs: ka, deadlineMs });
      else await followNative(handle, sink, { keepaliveMs: ka, deadlineMs });
    });
  });

  unary(app, SERVICE, "List", ro, async (_raw, c) => {
    const { entry } = c.env;
    heavyOnly(entry);
    return registry.use(entry, async (sb) => {
      const mine = procsOf(sb);
      const processes = sb.commands.list().map((info) => {
        const p = mine.get(info.pid);
        if (p && !p.ended) {
          const row: Record<string, unknown> = { config: p.config, pid: p.pid };
          if (p.tag !== undefined) row.tag = p.tag;
          return row;
        }
        const [cmd = "", ...args] = info.argv;
        return { config: { cmd, args, envs: {}, cwd: info.cwd }, pid: info.pid };
      });
      return { processes };
    });
  });

  unary(app, SERVICE, "SendSignal", ro, async (raw, c) => {
    const { entry } = c.env;
    heavyOnly(entry);
    const req = parseOptions(signalSchema, raw);
    const sig = SIGNALS[String(req.signal ?? "")];
    if (!sig) throw new ConnectError("invalid_argument", `signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM (9 or 15), not ${JSON.stringify(req.signal ?? null)}`);
    return registry.use(entry, async (sb) => {
      const { handle } = select(sb, req.process);
      // kill() resolves once a KILL has ended the command; a TERM is sent and not waited for.
      const ended = await handle.kill(sig);
      if (!ended && sig === "KILL") throw new ConnectError("not_found", `process with pid ${handle.pid} not found (it had already ended)`);
      return {};
    });
  });

  unary(app, SERVICE, "SendInput", ro, async (raw, c) => {
    const { entry } = c.env;
    heavyOnly(entry);
    const req = parseOptions(sendInputSchema, raw);
    if (req.input.pty !== undefined) throw new ConnectError("unimplemented", "agentbox has no PTYs: send input to a command's stdin");
    if (req.input.stdin === undefined) throw new ConnectError("invalid_argument", "input.stdin is missing");
    const bytes = Buffer.from(req.input.stdin, "base64");
    return registry.use(entry, async (sb) => {
      await select(sb, req.process).handle.writeStdin(bytes);
      return {};
    });
  });
  unary(app, SERVICE, "CloseStdin", ro, async (raw, c) => {
    const { entry } = c.env;
    heavyOnly(entry);
    const req = parseOptions(selectedSchema, raw);
    return registry.use(entry, async (sb) => {
      await select(sb, req.process).handle.closeStdin();
      return {};
    });
  });
  unary(app, SERVICE, "Update", ro, async (_raw, c) => {
    heavyOnly(c.env.entry);
    throw new ConnectError("unimplemented", "Update resizes a PTY; agentbox has no PTYs (sandbox.pty is not supported)");
  });
  // StreamInput is client streaming (full duplex over HTTP/2 in practice; the SDKs use SendInput instead).
  app.post(`/${SERVICE}/StreamInput`, (c) => c.json({ code: "unimplemented", message: "StreamInput (client streaming) is not served by agentbox: use SendInput and CloseStdin" }, 501));
}
