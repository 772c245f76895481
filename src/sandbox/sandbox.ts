// The Sandbox façade: the one API every surface uses. It resolves options (resolve.ts), starts the
// engine the registry picks, serialises operations on one sandbox, and turns engine answers into
// the public result shape. It names no engine.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { FileSystemError, InvalidOptionsError, SandboxClosedError, SavedStateError, TierUnavailableError, type LimitName } from "../errors.js";
import type { Duplex } from "node:stream";
import type { Engine, EngineExecResult, EngineInfo, EngineNetwork, EnginePorts, EngineProcess, EngineSnapshot } from "../engines/engine.js";
import { closePools, configurePools, DEFAULT_HEAVY_POOL_SIZE, warmPools } from "../engines/pools.js";
import { engineById, loadEngineSnapshot, prewarmEngines, startEngine, type EngineDescriptor } from "../engines/registry.js";
import { readSavedFile } from "../engines/saved-files.js";
import {
  commandOptionsSchema,
  forkOptionsSchema,
  MAX_FORKS,
  normalizeGuestPath,
  parseOptions,
  poolOptionsSchema,
  resolvePoolOptions,
  runOptionsSchema,
  type CommandOptionsInput,
  type ForkOptionsInput,
  type PoolOptionsInput,
  type RunOptionsInput,
} from "../policy/options.js";
import type { NetworkLogEntry } from "../policy/network.js";
import { CarriedNetworkLog } from "../engines/pool/network-log.js";
import { redactSecrets } from "../policy/secrets.js";
import type { DirEntry } from "../protocol/messages.js";
import { resolveSandboxOptions, type SandboxOptions, type SandboxOptionsInput } from "./resolve.js";
import type { RunResult } from "./result.js";

/**
 * A sandbox's file system, E2B-style: read and write (writes count against the tier's quotas). Every path must be absolute, with no `..` segment and no NUL
 * (normalizeGuestPath); another path rejects with InvalidOptionsError naming it.
 */
export class SandboxFiles {
  constructor(private readonly sb: Sandbox) {}

  /** Write a file, creating parent directories. Counts against limits.vfsBytes / vfsFiles. */
  async write(path: string, data: string | Uint8Array): Promise<void> {
    const p = normalizeGuestPath(path);
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    return this.sb.exclusive((e) => e.writeFile(p, bytes));
  }

  read(path: string): Promise<string>;
  read(path: string, opts: { format: "text" }): Promise<string>;
  read(path: string, opts: { format: "bytes" }): Promise<Uint8Array>;
  async read(path: string, opts?: { format: "text" | "bytes" }): Promise<string | Uint8Array> {
    const p = normalizeGuestPath(path);
    const bytes = await this.sb.exclusive((e) => e.readFile(p));
    return opts?.format === "bytes" ? bytes : new TextDecoder().decode(bytes);
  }

  /** Entries of a directory, sorted by name in code-point order. */
  async list(path: string): Promise<DirEntry[]> {
    const p = normalizeGuestPath(path);
    return this.sb.exclusive((e) => e.list(p));
  }

  /** Remove a file, link or directory (with its contents). */
  async remove(path: string): Promise<void> {
    const p = normalizeGuestPath(path);
    return this.sb.exclusive((e) => e.remove(p));
  }

  async exists(path: string): Promise<boolean> {
    const p = normalizeGuestPath(path);
    return this.sb.exclusive((e) => e.exists(p));
  }

  async makeDir(path: string): Promise<void> {
    const p = normalizeGuestPath(path);
    return this.sb.exclusive((e) => e.makeDir(p));
  }

  /**
   * Move a file or directory to `to` (whose parent directories are made), replacing a file there.
   * The heavy tier renames in the guest (`mv -T`); the nano tier, whose file API has no rename,
   * copies what is there (at most 10,000 entries) and removes the source, in one exclusive step.
   * A missing source is ENOENT; a directory onto an existing path, or into itself, is EEXIST/EINVAL.
   */
  async rename(from: string, to: string): Promise<void> {
    const src = normalizeGuestPath(from, "from");
    const dst = normalizeGuestPath(to, "to");
    if (src === dst) return;
    if (dst.startsWith(src === "/" ? "/" : `${src}/`)) throw new FileSystemError(dst, "EINVAL", "cannot move a directory into itself");
    return this.sb.exclusive(async (e) => {
      const what = await entryType(e, src);
      if (!what) throw new FileSystemError(src, "ENOENT", "no such file or directory");
      const there = await entryType(e, dst);
      if (there === "dir" || (there && what === "dir")) throw new FileSystemError(dst, "EEXIST", "the destination exists");
      if (this.sb.options.tier === "heavy" && e.exec) {
        await e.makeDir(path.posix.dirname(dst));
        const r = await e.exec(["mv", "-T", "--", src, dst], { timeoutMs: 60_000 });
        if (r.exitCode !== 0) throw new FileSystemError(src, /No such file/i.test(r.stderr) ? "ENOENT" : /Permission denied/i.test(r.stderr) ? "EACCES" : "EIO", `mv failed: ${r.stderr.trim().slice(0, 300)}`);
        return;
      }
      let budget = 10_000;
      const copy = async (s: string, d: string, type: "file" | "dir" | "symlink"): Promise<void> => {
        if (--budget < 0) throw new FileSystemError(src, "E2BIG", "too many entries to move (more than 10000) on this tier");
        if (type === "dir") {
          await e.makeDir(d);
          for (const c of await e.list(s)) {
            if (c.name === "" || c.name === "." || c.name === ".." || c.name.includes("/") || c.name.includes("\0")) continue;
            await copy(path.posix.join(s, c.name), path.posix.join(d, c.name), c.type);
          }
        } else if (type === "file") {
          await e.writeFile(d, await e.readFile(s));
        }
      };
      await copy(src, dst, what);
      await e.remove(src);
    });
  }
}

/** Whether `p` is a file, directory or link (from its parent's listing), or undefined when missing. */
async function entryType(e: Engine, p: string): Promise<"file" | "dir" | "symlink" | undefined> {
  if (p === "/") return "dir";
  if (!(await e.exists(p))) return undefined;
  const name = path.posix.basename(p);
  return (await e.list(path.posix.dirname(p))).find((x) => x.name === name)?.type ?? "file";
}

/** What commands.run() returns: the command's exit code and everything it wrote. */
export interface CommandResult {
  /** The command's exit status; 128 + N when signal N ended it. */
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Name of the signal that ended the command, e.g. "SIGKILL". */
  signal?: string;
  durationMs: number;
  /**
   * Set when a limit stopped the command: it was killed (exit code 137) at `timeoutMs`, past
   * `limits.outputBytes`, or for lack of memory (`memoryMb`), and `stdout`/`stderr` hold what it
   * wrote until then. The sandbox lives on.
   */
  limitHit?: LimitName;
}

/** Where a command runs when no `cwd` is given (the guest agent's default). */
const DEFAULT_CWD = "/home/user";

/** A background command still running, as `commands.list()` gives it. */
export interface CommandInfo {
  /** Its process id in the guest. */
  pid: number;
  /** The command as given: the string run by `/bin/bash -c`, or the argv joined by spaces. */
  cmd: string;
  argv: string[];
  cwd: string;
  startedAt: Date;
}

/**
 * A command started with `commands.run(cmd, { background: true })` (heavy tier): it runs in the
 * sandbox while other calls proceed. `wait()` gives its result as a foreground run would;
 * `kill()` ends it; it ends with the sandbox (then `wait()` rejects with the error that ended it).
 */
export class CommandHandle {
  readonly pid: number;
  readonly cmd: string;
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly startedAt: Date;
  private readonly result: Promise<CommandResult>;
  private finished: CommandResult | undefined;
  private settled = false;

  /** @internal */
  constructor(
    private readonly process: EngineProcess,
    info: Omit<CommandInfo, "pid">,
  ) {
    this.pid = process.pid;
    this.cmd = info.cmd;
    this.argv = info.argv;
    this.cwd = info.cwd;
    this.startedAt = info.startedAt;
    this.result = process.done.then(
      (r) => (this.finished = toCommandResult(r)),
      (e: unknown) => {
        this.settled = true;
        throw e;
      },
    );
    // A handle nobody waits for must not turn the sandbox's end into an unhandled rejection.
    this.result.catch(() => undefined);
  }

  /** True until the command has ended (or the sandbox has). */
  get running(): boolean {
    return this.finished === undefined && !this.settled;
  }

  /** Its exit code once it has ended. */
  get exitCode(): number | undefined {
    return this.finished?.exitCode;
  }

  /** What it has written to stdout so far (limits.outputBytes caps stdout and stderr together). */
  get stdout(): string {
    return this.finished?.stdout ?? this.process.output().stdout;
  }

  get stderr(): string {
    return this.finished?.stderr ?? this.process.output().stderr;
  }

  /**
   * Wait for the command to end: its exit code and everything it wrote, as a foreground
   * `commands.run` gives them (a `timeoutMs` or `limits.outputBytes` it hit is `limitHit`).
   * Rejects when the sandbox ends first, with the output so far as `err.result`.
   */
  wait(): Promise<CommandResult> {
    return this.result;
  }

  /**
   * Send the command's process group a signal (default SIGKILL, then wait for it to end).
   * False when it had already ended.
   */
  kill(signal: "KILL" | "TERM" | "INT" = "KILL"): Promise<boolean> {
    if (!this.running) return Promise.resolve(false);
    return this.process.kill(signal);
  }

  /**
   * Write to the command's standard input, in order (it must have been started with
   * `stdinOpen: true`). Rejects with InvalidOptionsError when its stdin is not open, was closed, or
   * holds 8 MiB the command has not read yet.
   */
  async writeStdin(data: string | Uint8Array): Promise<void> {
    if (!this.process.writeStdin) throw new TierUnavailableError("this engine cannot write to a running command's stdin");
    if (!this.running) throw new InvalidOptionsError([{ path: "stdin", message: `command ${this.pid} has ended` }]);
    await this.process.writeStdin(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** Close the command's standard input (EOF for it); it must have been started with `stdinOpen: true`. */
  async closeStdin(): Promise<void> {
    if (!this.process.closeStdin) throw new TierUnavailableError("this engine cannot close a running command's stdin");
    if (!this.running) throw new InvalidOptionsError([{ path: "stdin", message: `command ${this.pid} has ended` }]);
    await this.process.closeStdin();
  }

  /** @internal */
  info(): CommandInfo {
    return { pid: this.pid, cmd: this.cmd, argv: [...this.argv], cwd: this.cwd, startedAt: this.startedAt };
  }
}

function toCommandResult(r: EngineExecResult): CommandResult {
  const result: CommandResult = { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr, durationMs: r.durationMs };
  if (r.signal) result.signal = r.signal;
  if (r.limitHit) result.limitHit = r.limitHit;
  return result;
}

/** Processes in the sandbox, E2B-style (heavy tier). */
export class SandboxCommands {
  /** Background commands by guest pid, until they end. */
  private readonly background = new Map<number, CommandHandle>();

  constructor(private readonly sb: Sandbox) {}

  /**
   * Run a command and wait for it. A string runs with `/bin/bash -c`; an array is an argv.
   * Output streams to onStdout/onStderr as it comes. Past `timeoutMs` (default
   * limits.timeoutMs) or `limits.outputBytes` the command is killed and the result says so with
   * `limitHit` (exit code 137, the output so far); the sandbox lives on. When the sandbox itself
   * ends (or `signal` aborts), the thrown error carries the output so far as `err.result`.
   *
   * With `background: true` it resolves as soon as the command's process runs, with a
   * CommandHandle (pid, wait(), kill(), output so far). The command then holds nothing of the
   * sandbox: other calls proceed while it runs. It has no time limit unless `timeoutMs` is given;
   * past `limits.outputBytes` it is killed as a foreground command is (its result has
   * `limitHit: "outputBytes"`); `signal` kills it. A program that cannot start (no such file, a
   * bad cwd) rejects with InvalidOptionsError naming why, where a foreground run gives exit 127.
   */
  run(cmd: string | readonly string[], opts: CommandOptionsInput & { background: true }): Promise<CommandHandle>;
  run(cmd: string | readonly string[], opts?: CommandOptionsInput & { background?: false | undefined }): Promise<CommandResult>;
  run(cmd: string | readonly string[], opts?: CommandOptionsInput & { background?: boolean | undefined }): Promise<CommandResult | CommandHandle>;
  run(cmd: string | readonly string[], opts: CommandOptionsInput & { background?: boolean | undefined } = {}): Promise<CommandResult | CommandHandle> {
    const o = parseOptions(commandOptionsSchema, opts);
    const argv = typeof cmd === "string" ? ["/bin/bash", "-c", cmd] : [...cmd];
    if (argv.length === 0 || argv.some((a) => typeof a !== "string" || a.includes("\0"))) {
      throw new InvalidOptionsError([{ path: "cmd", message: "must be a string or a non-empty array of strings without NUL" }]);
    }
    const stdin = typeof o.stdin === "string" ? new TextEncoder().encode(o.stdin) : o.stdin;
    const common = { signal: o.signal, onStdout: o.onStdout, onStderr: o.onStderr, cwd: o.cwd, env: o.env, stdin };
    if (o.stdinOpen && !o.background) throw new InvalidOptionsError([{ path: "stdinOpen", message: "only a background command keeps its stdin open" }]);
    if (o.background) {
      // The lock is held until the process has started, not while it runs.
      return this.sb.exclusive(async (e) => {
        if (!e.spawn) throw this.unavailable();
        const p = await e.spawn(argv, { ...common, timeoutMs: o.timeoutMs, stdinOpen: o.stdinOpen });
        const h = new CommandHandle(p, { cmd: typeof cmd === "string" ? cmd : argv.join(" "), argv, cwd: o.cwd ?? DEFAULT_CWD, startedAt: new Date() });
        this.background.set(h.pid, h);
        const forget = () => {
          if (this.background.get(h.pid) === h) this.background.delete(h.pid);
        };
        h.wait().then(forget, forget);
        return h;
      });
    }
    const timeoutMs = o.timeoutMs ?? this.sb.options.limits.timeoutMs;
    return this.sb.exclusive(async (e) => {
      if (!e.exec) throw this.unavailable();
      return toCommandResult(await e.exec(argv, { ...common, timeoutMs }));
    });
  }

  /** The background commands still running, oldest first (none once the sandbox has ended). */
  list(): CommandInfo[] {
    if (this.sb.closed) return [];
    return [...this.background.values()].filter((h) => h.running).map((h) => h.info());
  }

  /** The handle of a background command still running, by its guest pid. */
  get(pid: number): CommandHandle | undefined {
    const h = this.background.get(pid);
    return h?.running && !this.sb.closed ? h : undefined;
  }

  /**
   * Kill a background command by its guest pid (SIGKILL unless `signal` says otherwise) and wait
   * for it to end. False when no background command with that pid is running.
   */
  async kill(pid: number, signal: "KILL" | "TERM" | "INT" = "KILL"): Promise<boolean> {
    const h = this.get(pid);
    return h ? h.kill(signal) : false;
  }

  private unavailable(): TierUnavailableError {
    return new TierUnavailableError(`commands.run needs a real Linux userland: create the sandbox with { tier: "heavy" } or { tier: "auto" } (this one is tier "${this.sb.options.tier}")`);
  }
}

/**
 * A sandbox's network, as its grant (`network: { allow }`) lets the guest use it: the record of
 * every attempt. Sandboxes without network have an empty record.
 */
export class SandboxNetwork {
  constructor(private readonly sb: Sandbox) {}

  /**
   * Every attempt the guest made, oldest first, at most the last 1000: one entry per request and
   * per redirect hop, allowed or not, with method, URL (no query), host, port, the address
   * connected to, the decision and its reason, status, bytes each way and duration. No headers
   * or bodies. Readable while a run is in progress and after the sandbox is killed.
   */
  log(): NetworkLogEntry[] {
    return this.sb.networkEntries();
  }

  /** Call `listener` with each attempt as it is recorded (across pauses); returns the function that stops it. */
  watch(listener: (entry: NetworkLogEntry) => void): () => void {
    return this.sb.watchNetwork(listener);
  }

  /**
   * Each `network.secrets` name → the placeholder the guest holds for it (in its environment
   * variable of that name; JavaScript on the nano tier has no environment, so write it into the
   * code). Placeholders are no secret: the host sends the value in their place, to the secret's
   * hosts only. Empty without secrets.
   */
  secretPlaceholders(): Record<string, string> {
    return this.sb.networkRecord?.placeholders?.() ?? {};
  }
}

/** A guest port the host forwards to: `url` reaches the guest's server from this machine. */
export interface ExposedPort {
  /** The port on the guest's loopback. */
  port: number;
  /** `http://127.0.0.1:<host port>`: a listener on the host's loopback forwarding to `port`. */
  url: string;
}

/**
 * TCP servers in the sandbox, reached from the host (heavy tier; a tier "auto" sandbox once it
 * runs there). The guest has no network interface: each connection is a stream over the sandbox's
 * agent channel to 127.0.0.1:`port` inside it. Not queued behind runs or commands (a server a
 * running command started can be exposed while it runs).
 */
export class SandboxPorts {
  constructor(private readonly sb: Sandbox) {}

  /**
   * Listen on the host's 127.0.0.1 (a free port) and forward each connection to `port` in the
   * sandbox; the same listener when `port` is already exposed. A connection the guest refuses
   * (nothing listens there yet) is closed. Listeners end with the sandbox (kill, or its death).
   * Anyone on this machine who can reach 127.0.0.1 can use the URL: it has no authentication.
   */
  async expose(port: number): Promise<ExposedPort> {
    const hostPort = await this.engine(port, "expose").expose(port);
    return { port, url: `http://127.0.0.1:${hostPort}` };
  }

  /** The exposed ports, by guest port. */
  list(): ExposedPort[] {
    return this.sb.enginePorts?.list().map((p) => ({ port: p.port, url: `http://127.0.0.1:${p.hostPort}` })) ?? [];
  }

  /** Stop forwarding `port`: its listener closes and its connections are cut. Idempotent. */
  async close(port: number): Promise<void> {
    checkPort(port);
    await this.sb.enginePorts?.close(port);
  }

  /**
   * One connection to `port` in the sandbox, as a Node Duplex (what the HTTP server's proxy
   * uses). Rejects with PortConnectError when nothing listens there.
   */
  connect(port: number): Promise<Duplex> {
    return this.engine(port, "connect").connect(port);
  }

  private engine(port: number, what: string): EnginePorts {
    checkPort(port);
    const reason = this.sb.closedReason;
    if (reason !== undefined) throw new SandboxClosedError(reason);
    const ports = this.sb.enginePorts;
    if (!ports) throw new TierUnavailableError(`ports.${what} needs a server in a real Linux userland: create the sandbox with { tier: "heavy" } (this one is tier "${this.sb.options.tier}")`);
    return ports;
  }
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidOptionsError([{ path: "port", message: `must be an integer from 1 to 65535, got ${String(port)}` }]);
}

/**
 * A saved sandbox: `Sandbox.restore(snap)` starts independent copies of it, as many as asked.
 * Heavy tier: a checkpoint of the whole sandbox. Nano tier: the sandbox's history (its cells and
 * host file operations) and an image of its files, replayed into a fresh sandbox on restore (see
 * Sandbox.snapshot for what that means).
 */
export class SandboxSnapshot {
  /** @internal */
  constructor(
    /** @internal */ readonly engineSnapshot: EngineSnapshot,
    readonly options: SandboxOptions,
    readonly seed: number,
    /** @internal */ readonly engineId: string,
  ) {}

  /** Delete the saved state (restoring afterwards fails). Idempotent. */
  remove(): Promise<void> {
    return this.engineSnapshot.remove();
  }

  /** What the saved state takes now, bytes: disk for a heavy checkpoint, memory for a nano history and file image; 0 once removed. */
  sizeBytes(): number {
    return this.engineSnapshot.sizeBytes?.() ?? 0;
  }

  /**
   * Write this snapshot into `dir` (an existing, empty directory the caller owns): the engine's
   * payload (moved there, for heavy checkpoints) and `snapshot.json` (options, seed, engine and
   * the engine's descriptor of its payload). This object is spent afterwards: restore from
   * `SandboxSnapshot.load()` of where `dir` ends up. Refused (SavedStateError) for a sandbox with
   * network secrets (their values are never written to disk) and for engines that cannot save to
   * disk (TierUnavailableError).
   */
  async persist(dir: string): Promise<void> {
    const refusal = this.persistRefusal();
    if (refusal) throw new SavedStateError(refusal);
    const saved = await (this.engineSnapshot.persist as (dir: string) => Promise<unknown>).call(this.engineSnapshot, dir);
    const meta: z.input<typeof savedSnapshotSchema> = { version: 1, engineId: this.engineId, seed: this.seed, options: this.options, engine: saved };
    fs.writeFileSync(path.join(dir, SNAPSHOT_FILE), JSON.stringify(meta));
  }

  /** Why `persist` would refuse this snapshot before writing anything, or undefined when it would not. @internal */
  persistRefusal(): string | undefined {
    if (this.options.network?.secrets.length) return "a sandbox with network secrets is not written to disk (their values would be)";
    if (!this.engineSnapshot.persist) return `the engine "${this.engineId}" cannot write its snapshots to disk`;
    return undefined;
  }

  /**
   * A snapshot from what `persist` wrote into `dir`. Everything read is checked (sizes, the option
   * schema, each engine's descriptor, paths inside `dir`, the image or artefacts it needs being
   * built here); SavedStateError names what is wrong. Restores from it as from the original.
   */
  static async load(dir: string): Promise<SandboxSnapshot> {
    let meta: z.output<typeof savedSnapshotSchema>;
    try {
      meta = savedSnapshotSchema.parse(JSON.parse(readSavedFile(dir, SNAPSHOT_FILE, MAX_SNAPSHOT_JSON_BYTES).toString("utf8")));
    } catch (e) {
      if (e instanceof SavedStateError) throw e;
      throw new SavedStateError(`${path.join(dir, SNAPSHOT_FILE)} is not a saved snapshot: ${e instanceof z.ZodError ? e.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ") : (e as Error).message}`, { cause: e });
    }
    let r: ReturnType<typeof resolveSandboxOptions>;
    try {
      // The same resolution as at create (clock, mounts' real paths), with the sandbox's own seed.
      r = resolveSandboxOptions(meta.options);
    } catch (e) {
      throw new SavedStateError(`the options saved in ${path.join(dir, SNAPSHOT_FILE)} no longer resolve: ${(e as Error).message}`, { cause: e });
    }
    const engine = await loadEngineSnapshot(meta.engineId, { options: r.options, seed: meta.seed, clock: r.clock, mounts: [...r.mounts] }, meta.engine, dir);
    return new SandboxSnapshot(engine, r.options, meta.seed, meta.engineId);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.remove();
  }
}

/** The file a persisted snapshot's own metadata is in, beside its engine's payload. */
const SNAPSHOT_FILE = "snapshot.json";
const MAX_SNAPSHOT_JSON_BYTES = 16 * 1024 * 1024;
const savedSnapshotSchema = z.strictObject({
  version: z.literal(1),
  engineId: z.string().max(64),
  seed: z.number().int().min(0).max(2 ** 53),
  /** The sandbox's resolved options (secrets never: persist refuses them); checked by the option schema at load. */
  options: z.record(z.string(), z.unknown()),
  engine: z.unknown(),
});

/** Stands in for the engine of a sandbox made paused (from a saved state): nothing runs until it is resumed. */
const PAUSED_ENGINE: Engine = {
  closedReason: "paused",
  pid: undefined,
  run: () => Promise.reject(new SandboxClosedError("paused")),
  writeFile: () => Promise.reject(new SandboxClosedError("paused")),
  readFile: () => Promise.reject(new SandboxClosedError("paused")),
  list: () => Promise.reject(new SandboxClosedError("paused")),
  remove: () => Promise.reject(new SandboxClosedError("paused")),
  exists: () => Promise.reject(new SandboxClosedError("paused")),
  makeDir: () => Promise.reject(new SandboxClosedError("paused")),
  dispose: () => Promise.resolve(),
};

const SANDBOX_ID = /^sb_[0-9a-f]{24}$/;

/**
 * What runs a sandbox. Tier "auto" says which tier it runs on now (`current`), with the heavy
 * tier's backend once it has moved there.
 */
export type SandboxInfo =
  | { tier: "nano" }
  | ({ tier: "heavy" } & EngineInfo)
  | { tier: "auto"; current: "nano" }
  | ({ tier: "auto"; current: "heavy" } & EngineInfo);

/** A new sandbox id: `sb_` and 24 hex digits (96 random bits). The server names sandboxes by it. */
export function newSandboxId(): string {
  return `sb_${randomBytes(12).toString("hex")}`;
}

export class Sandbox {
  /** This sandbox's id, `sb_` + 24 hex digits, drawn at creation; a restored or forked sandbox gets its own. */
  readonly id: string;
  /** Seed of the sandbox's randomness (the caller's, or the fresh one drawn for it; a fork's own when it was given one). */
  readonly seed: number;
  readonly options: SandboxOptions;
  readonly files: SandboxFiles;
  readonly commands: SandboxCommands;
  readonly network: SandboxNetwork;
  readonly ports: SandboxPorts;
  private queue: Promise<unknown> = Promise.resolve();
  private killed: string | undefined;
  /** While paused: the saved engine (its process ended); the next operation restores it. */
  private pausedState: EngineSnapshot | undefined;
  /** The guest's network attempts, kept across pauses (each resume runs on a new engine). */
  private readonly networkLog: CarriedNetworkLog;
  /** This process's open sandboxes by id (Sandbox.connect, Sandbox.resume); gone once killed. */
  private static readonly byId = new Map<string, WeakRef<Sandbox>>();

  private constructor(
    private engine: Engine,
    private readonly descriptor: EngineDescriptor,
    options: SandboxOptions,
    seed: number,
    id: string = newSandboxId(),
  ) {
    this.id = id;
    // Secret values stay with the engine: what callers (and the servers) read shows "***".
    this.options = redactSecrets(options);
    this.seed = seed;
    this.files = new SandboxFiles(this);
    this.commands = new SandboxCommands(this);
    this.network = new SandboxNetwork(this);
    this.ports = new SandboxPorts(this);
    Sandbox.byId.set(this.id, new WeakRef(this));
    this.networkLog = new CarriedNetworkLog(engine.network);
  }

  /** The attempts kept, oldest first (the last NETWORK_LOG_ENTRIES, across pauses). @internal */
  networkEntries(): NetworkLogEntry[] {
    return this.networkLog.entries();
  }

  /** @internal */
  watchNetwork(listener: (entry: NetworkLogEntry) => void): () => void {
    return this.networkLog.watch(listener);
  }

  /**
   * The open sandbox of this process with `id` (a paused one is resumed), or undefined when there
   * is none (killed, never made here). The HTTP server's ids are these ids too.
   */
  static async connect(id: string): Promise<Sandbox | undefined> {
    const sb = Sandbox.byId.get(id)?.deref();
    if (!sb || sb.killed !== undefined) return undefined;
    await sb.resume();
    return sb;
  }

  /** Resume the paused sandbox `id` of this process; SandboxClosedError when there is none. */
  static async resume(id: string): Promise<Sandbox> {
    const sb = await Sandbox.connect(id);
    if (!sb) throw new SandboxClosedError(`no open sandbox ${JSON.stringify(id)} in this process`);
    return sb;
  }

  /** True while paused: saved, its process ended; any operation on it (or resume()) brings it back. */
  get paused(): boolean {
    return this.pausedState !== undefined;
  }

  /**
   * Save the whole sandbox (as snapshot() does: memory and processes on the heavy tier, the
   * replayable session and files on the nano tier) and end its process, freeing its memory. It
   * keeps its id; the next operation on it, `resume()`, `Sandbox.resume(id)` or
   * `Sandbox.connect(id)` restores it. Exposed ports are closed. Idempotent. Fails as snapshot()
   * does (a tier that cannot save, background commands running), the sandbox running on then.
   */
  pause(): Promise<void> {
    return this.queued(async () => {
      if (this.pausedState) return;
      const reason = this.killed ?? this.engine.closedReason;
      if (reason !== undefined) throw new SandboxClosedError(reason);
      this.refuseWhileBackground("pause");
      if (!this.engine.snapshot) throw new TierUnavailableError(`pause() is not available on the engine "${this.descriptor.id}" of this build (tier "${this.options.tier}")`);
      const saved = await this.engine.snapshot({ final: true });
      this.pausedState = saved;
      await this.engine.dispose("paused");
    });
  }

  /**
   * A paused sandbox, with the id `id`, from a saved state (`SandboxSnapshot.load` of what
   * `persistPaused` wrote, in an earlier process): the first operation on it restores it, as
   * after a pause. @internal
   */
  static fromPaused(id: string, saved: SandboxSnapshot): Sandbox {
    if (!SANDBOX_ID.test(id)) throw new SavedStateError(`${JSON.stringify(id.slice(0, 64))} is not a sandbox id (sb_ and 24 hex digits)`);
    const open = Sandbox.byId.get(id)?.deref();
    if (open && open.killed === undefined) throw new SavedStateError(`a sandbox ${id} is already open in this process`);
    const sb = new Sandbox(PAUSED_ENGINE, engineById(saved.engineId), saved.options, saved.seed, id);
    sb.pausedState = saved.engineSnapshot;
    return sb;
  }

  /**
   * Hand the paused state to `write` (as a SandboxSnapshot to `persist` into a directory it then
   * puts in place; it resolves with that place), then take it back from there
   * (`SandboxSnapshot.load`): the sandbox stays paused, its state now on disk. In the sandbox's
   * turn, so nothing resumes it meanwhile. SavedStateError, the sandbox still paused in memory,
   * when it cannot be written (`persistRefusal`); should `write` or the load back fail, the saved
   * state is gone with it: the sandbox is then killed (SandboxClosedError on its next use). @internal
   */
  persistPaused(write: (snap: SandboxSnapshot) => Promise<string>): Promise<void> {
    return this.queued(async () => {
      const saved = this.pausedState;
      if (!saved || this.killed !== undefined) throw new SandboxClosedError(this.killed ?? "the sandbox is not paused");
      const snap = new SandboxSnapshot(saved, this.options, this.seed, this.descriptor.id);
      // Refused before anything moved (secrets, an engine that cannot save): still paused in memory.
      const refusal = snap.persistRefusal();
      if (refusal) throw new SavedStateError(refusal);
      try {
        this.pausedState = (await SandboxSnapshot.load(await write(snap))).engineSnapshot;
      } catch (e) {
        this.killed = `its saved state could not be written to disk or read back: ${(e as Error).message}`;
        Sandbox.byId.delete(this.id);
        this.pausedState = undefined;
        await saved.remove().catch(() => undefined);
        throw e;
      }
    });
  }

  /** Bring a paused sandbox back now (any operation on it does the same). A no-op when it runs. */
  resume(): Promise<void> {
    return this.queued(() => this.wake());
  }

  private async wake(): Promise<void> {
    const saved = this.pausedState;
    if (!saved || this.killed !== undefined) return;
    this.engine = await saved.restore({});
    this.networkLog.switchTo(this.engine.network);
    this.pausedState = undefined;
    await saved.remove().catch(() => undefined);
  }

  /** A save cannot carry a live command's handle, and the microVM cannot save while a request is in flight. */
  private refuseWhileBackground(what: "snapshot" | "pause"): void {
    const running = this.commands.list();
    if (running.length > 0) {
      throw new InvalidOptionsError([{ path: what, message: `background commands are running (pid ${running.map((c) => c.pid).join(", ")}): kill them or wait() for them before ${what}()` }]);
    }
  }

  /** Run `fn` in this sandbox's turn (after every earlier operation), paused or not. */
  private queued<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Start a new, independent sandbox from a snapshot (with a new id); the snapshot can be restored
   * again. A removed snapshot rejects with SnapshotRemovedError; on the nano tier a history that
   * does not replay as it first ran rejects with ReplayError naming the cell.
   */
  static async restore(snapshot: SandboxSnapshot): Promise<Sandbox> {
    return Sandbox.restoreWith(snapshot, undefined);
  }

  private static async restoreWith(snapshot: SandboxSnapshot, seed: number | undefined): Promise<Sandbox> {
    if (!(snapshot instanceof SandboxSnapshot)) throw new InvalidOptionsError([{ path: "snapshot", message: "must be a SandboxSnapshot from sb.snapshot()" }]);
    const engine = await snapshot.engineSnapshot.restore(seed === undefined ? {} : { seed });
    return new Sandbox(engine, engineById(snapshot.engineId), snapshot.options, seed ?? snapshot.seed);
  }

  /**
   * Create a sandbox. Options are validated up front by the schema of their tier (an option
   * another tier uses is an error naming it); see resolveSandboxOptions.
   *
   * `tier: "auto"` (Python): the sandbox starts on the nano tier; a cell that needs the heavy tier
   * (decided inside the sandbox, before the cell runs: an import the nano Python lacks,
   * subprocess, os.system and the like) or a `commands.run` moves it there for good. The move
   * copies /home/user and /tmp, then *re-executes* every earlier cell that ran without error (its
   * output discarded, each under the time limit it first ran with), copies the files again, and
   * disposes of the nano side. A failed move (TierUnavailableError, ReplayError naming the cell)
   * runs nothing of the cell and leaves the sandbox on nano as it was. `info.current` and each
   * result's `tier` say where it runs.
   */
  static async create(opts: SandboxOptionsInput = {}): Promise<Sandbox> {
    const r = resolveSandboxOptions(opts);
    const { engine, descriptor } = await startEngine(r.engines.map(engineById), { options: r.options, seed: r.seed, clock: r.clock, mounts: [...r.mounts] });
    return new Sandbox(engine, descriptor, r.options, r.seed);
  }

  /**
   * Size the shared pools of ready workers (one pool per nano-tier language). `size` keeps a
   * fixed number (default 2; 0 turns pooling off). `min`/`max` make them adaptive instead: each
   * keeps `min` and grows toward the largest burst of takes within 5 s it saw in the last
   * `idleShrinkMs` (default 30 s), up to `max`. `memoryBudgetMb` caps the ready workers of all
   * pools together (each kind's worker estimated by its measured RSS). `heavy` sizes each
   * heavy-tier pool apart (fixed; default: the smaller of `size`/`min` and 1, as a ready heavy
   * sandbox holds ~60–100 MB). Engines that warm up ahead (the registry says which) start filling
   * now; `wait` resolves once the pools are full.
   */
  static async configurePool(opts: PoolOptionsInput & { wait?: boolean } = {}): Promise<void> {
    const { wait, ...rest } = opts;
    const config = resolvePoolOptions(parseOptions(poolOptionsSchema, rest), DEFAULT_HEAVY_POOL_SIZE);
    await configurePools(config);
    if (config.max > 0) prewarmEngines();
    if (wait) await warmPools();
  }

  /** Stop the shared pools' idle workers (sandboxes already created are not affected). */
  static async shutdownPool(): Promise<void> {
    await closePools();
  }

  /**
   * Run code with REPL semantics: globals persist; a trailing expression's repr is `value`;
   * `tier` says which tier ran it. Output streams to onStdout/onStderr and each rich result to
   * onResult as it happens (after the host's checks, in order; the same results are in `results`
   * at the end). On a tier "auto" sandbox still on nano, a cell that needs the heavy tier first
   * moves the sandbox (see create); `timeoutMs` then limits the cell itself, not the move, whose
   * replayed cells each get the time limit they first ran with.
   */
  async runCode(code: string, opts: RunOptionsInput = {}): Promise<RunResult> {
    const o = parseOptions(runOptionsSchema, opts);
    if (typeof code !== "string") throw new InvalidOptionsError([{ path: "code", message: "must be a string" }]);
    const timeoutMs = o.timeoutMs ?? this.options.limits.timeoutMs;
    const r = await this.exclusive((e) => e.run(code, { timeoutMs, signal: o.signal, onStdout: o.onStdout, onStderr: o.onStderr, onResult: o.onResult }));
    const result: RunResult = {
      stdout: r.stdout,
      stderr: r.stderr,
      exitCode: r.error ? 1 : 0,
      durationMs: r.durationMs,
      vfsDigest: r.vfsDigest,
      seed: this.seed,
      tier: r.tier ?? (this.descriptor.tier === "heavy" ? "heavy" : "nano"),
    };
    if (r.value !== null) result.value = r.value;
    if (r.results && r.results.length > 0) result.results = r.results;
    if (r.error) result.error = r.error;
    if (r.limitHit) result.limitHit = r.limitHit;
    return result;
  }

  /**
   * Save the sandbox; it keeps running, and `Sandbox.restore(snap)` starts copies of it. Heavy
   * tier: its whole state (processes, memory, files). Nano tier: by deterministic replay — the
   * snapshot holds the cells that completed (those that raised too) and the host's file
   * operations, in order, plus an image of /home/user and /tmp; a restore replays them in a fresh
   * sandbox with the same options, seed and clock (output discarded) and puts the files back as
   * saved. With a seed (and the virtual clock it defaults to) the copy's globals, imports, files
   * and random stream are exactly the original's; without, what the cells computed from real time
   * or fresh entropy may differ. Replayed cells repeat their network requests. Refused (ReplayError)
   * once a cell was stopped by its time limit or an abort, or the history passed its cap
   * (MAX_HISTORY_STEPS cells and file operations, MAX_HISTORY_BYTES bytes); refused
   * (InvalidOptionsError) with a read-write mount. Tier "auto": on the nano tier as nano (a copy
   * is on nano and can still move, its nano cells replayed there); once moved, as heavy.
   */
  snapshot(): Promise<SandboxSnapshot> {
    return this.exclusive(async (e) => {
      this.refuseWhileBackground("snapshot");
      if (!e.snapshot) throw new TierUnavailableError(`snapshot() is not available on the engine "${this.descriptor.id}" of this build (tier "${this.options.tier}")`);
      return new SandboxSnapshot(await e.snapshot(), this.options, this.seed, this.descriptor.id);
    });
  }

  /**
   * `n` (1 to MAX_FORKS) independent copies of this sandbox as it is now, each with its own id: a
   * snapshot restored `n` times, the snapshot's saved state removed afterwards. This sandbox keeps
   * running. With `seeds` (one per fork) each copy's randomness is re-seeded after the copy (nano:
   * the sandbox's entropy source and Python's `random`; heavy: Python's `random`), and `fork.seed`
   * reports it; without, nano forks continue this sandbox's random stream (forks of a seeded nano
   * sandbox draw the same numbers), while heavy forks have `random` seeded again as any heavy
   * restore does (with the sandbox's seed when it has one, so they draw alike; else each afresh).
   * Fails as snapshot() and restore do; then no fork is left running.
   */
  async fork(n: number, opts: ForkOptionsInput = {}): Promise<Sandbox[]> {
    if (!Number.isInteger(n) || n < 1 || n > MAX_FORKS) throw new InvalidOptionsError([{ path: "n", message: `must be an integer from 1 to ${MAX_FORKS}, got ${String(n)}` }]);
    const { seeds } = parseOptions(forkOptionsSchema, opts);
    if (seeds && seeds.length !== n) throw new InvalidOptionsError([{ path: "seeds", message: `must hold one seed per fork (${n}), got ${seeds.length}` }]);
    const snap = await this.snapshot();
    try {
      const settled = await Promise.allSettled(Array.from({ length: n }, (_, i) => Sandbox.restoreWith(snap, seeds?.[i])));
      const forks = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) {
        await Promise.all(forks.map((f) => f.kill()));
        throw failed.reason;
      }
      return forks;
    } finally {
      await snap.remove();
    }
  }

  /**
   * What runs this sandbox: tier, and for the heavy tier the backend (and the microVM's
   * accelerator); for tier "auto" also the tier it runs on now.
   */
  get info(): SandboxInfo {
    const d = this.descriptor;
    const reported = d.info(this.engine);
    if (d.tier === "nano") return { tier: "nano" };
    if (d.tier === "heavy") return { tier: "heavy", ...reported, backend: reported.backend ?? d.backend };
    if (this.engine.tier !== "heavy") return { tier: "auto", current: "nano" };
    return { tier: "auto", current: "heavy", ...reported, backend: reported.backend ?? "unknown" };
  }

  /** OS process id of the worker serving this sandbox. */
  get pid(): number | undefined {
    return this.engine.pid;
  }

  /** True once the sandbox can no longer run code (killed, or its worker died). */
  get closed(): boolean {
    return this.killed !== undefined || (!this.pausedState && this.engine.closedReason !== undefined);
  }

  /** Stop the sandbox and its worker (a paused one: delete what it saved). Idempotent. */
  async kill(): Promise<void> {
    this.killed ??= "killed by the caller";
    Sandbox.byId.delete(this.id);
    const saved = this.pausedState;
    this.pausedState = undefined;
    await saved?.remove().catch(() => undefined);
    await this.engine.dispose(this.killed);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }

  /** The engine's network record, if its guest has network. @internal */
  get networkRecord(): EngineNetwork | undefined {
    return this.engine.network;
  }

  /** The engine's ports, if its guest can run servers. @internal */
  get enginePorts(): EnginePorts | undefined {
    return this.engine.ports;
  }

  /** Why the sandbox is closed, or undefined while it is open. @internal */
  get closedReason(): string | undefined {
    return this.killed ?? (this.pausedState ? undefined : this.engine.closedReason);
  }

  /** Run `fn` after every earlier operation on this sandbox has finished (a paused one resumed first). @internal */
  exclusive<T>(fn: (engine: Engine) => Promise<T>): Promise<T> {
    const next = this.queue.then(async () => {
      if (this.pausedState && this.killed === undefined) await this.wake();
      const reason = this.killed ?? this.engine.closedReason;
      if (reason !== undefined) throw new SandboxClosedError(reason);
      return fn(this.engine);
    });
    this.queue = next.catch(() => undefined);
    return next;
  }
}
