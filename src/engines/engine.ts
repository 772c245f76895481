// The one interface every engine (tier × language) implements. The Sandbox façade drives an
// Engine without knowing which one it is; engines never import the façade or each other.
import type { Duplex } from "node:stream";
import type { LimitName } from "../errors.js";
import type { NetworkLogEntry } from "../policy/network.js";
import type { DisplayResult } from "../protocol/display.js";
import type { DirEntry, GuestError } from "../protocol/messages.js";

export interface EngineRunOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  onStdout?: ((chunk: string) => void) | undefined;
  onStderr?: ((chunk: string) => void) | undefined;
  /** Each rich result as it happens, after the host's checks; the same ones end up in `results`. */
  onResult?: ((result: DisplayResult) => void) | undefined;
}

export interface EngineRunResult {
  stdout: string;
  stderr: string;
  value: string | null;
  error: GuestError | null;
  limitHit: LimitName | null;
  durationMs: number;
  vfsDigest: string;
  /** Rich results, already counted against the output cap (absent or empty: none). */
  results?: DisplayResult[] | undefined;
  /** The tier that ran it, from engines that change tier (tier "auto"); others run on their own. */
  tier?: "nano" | "heavy" | undefined;
}

/** A `nanoOnly` run's answer when the code needs the heavy tier: why (nothing of it ran). */
export interface NeedsHeavy {
  needsHeavy: string;
}

/**
 * A nano-tier engine that can decide, inside its guest, whether code needs the heavy tier: tier
 * "auto"'s nano side. One round trip: the guest parses the code and either runs it or says why not.
 */
export interface NanoOnlyRunner {
  runUnlessHeavy(code: string, opts: EngineRunOptions): Promise<EngineRunResult | NeedsHeavy>;
}

export interface EngineExecOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  onStdout?: ((chunk: string) => void) | undefined;
  onStderr?: ((chunk: string) => void) | undefined;
  cwd?: string | undefined;
  env?: Record<string, string> | undefined;
  stdin?: Uint8Array | undefined;
}

export interface EngineExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Name of the signal that ended the command (e.g. "SIGKILL"), or null. */
  signal: string | null;
  durationMs: number;
  /** The limit that stopped the command (it was killed; the sandbox lives on), when one did. */
  limitHit?: LimitName | undefined;
}

/** A background command's options: as a foreground one's, but with no wall clock unless one is given. */
export interface EngineSpawnOptions extends Omit<EngineExecOptions, "timeoutMs"> {
  /** Kill the command this long after it started; absent: it runs until it ends, is killed, or the sandbox ends. */
  timeoutMs?: number | undefined;
  /** Keep its stdin open (after `stdin`'s bytes, if given) for writeStdin()/closeStdin(). */
  stdinOpen?: boolean | undefined;
}

/** A command started in the background (heavy tier): running in the guest, not waited for. */
export interface EngineProcess {
  /** Its process id in the guest. */
  readonly pid: number;
  /** What it has written so far (counted against limits.outputBytes, as a foreground command's). */
  output(): { stdout: string; stderr: string };
  /** Settles when it ends, as exec()'s promise does (a result, or the error that ended the sandbox). */
  readonly done: Promise<EngineExecResult>;
  /** Send its process group a signal; resolves once a KILL has ended it. False: it had already ended. */
  kill(signal: "KILL" | "TERM" | "INT"): Promise<boolean>;
  /**
   * Write to its stdin (started with `stdinOpen`), in order; resolves once the guest has queued the
   * bytes. Rejects (InvalidOptionsError) when its stdin is not open, closed, or not being read.
   */
  writeStdin?(data: Uint8Array): Promise<void>;
  /** Close its stdin (EOF for the command). */
  closeStdin?(): Promise<void>;
}

/**
 * One request of a series (EngineSeries): a cell, a host file operation, a reseed, or a query.
 * Runs, writes, removes, makedirs and reseeds change the sandbox ("steps"); reads, lists and
 * exists checks only look ("queries").
 */
export type EngineSeriesStep =
  | { kind: "run"; code: string; timeoutMs: number }
  | { kind: "write"; path: string; data: Uint8Array }
  | { kind: "remove"; path: string }
  | { kind: "mkdir"; path: string }
  | { kind: "reseed"; seed: number }
  | { kind: "read"; path: string }
  | { kind: "list"; path: string }
  | { kind: "exists"; path: string };

/**
 * What one request of a series answered. A query that failed answers its error (typed, e.g. a
 * FileSystemError) and the series goes on: it changed nothing. A step that failed ends the series.
 */
export type EngineSeriesAnswer =
  | { kind: "run"; result: EngineRunResult }
  | { kind: "done" }
  | { kind: "read"; data: Uint8Array }
  | { kind: "list"; entries: DirEntry[] }
  | { kind: "exists"; exists: boolean }
  | { kind: "failed"; error: Error };

/**
 * An engine that takes many requests at once (nano workers): all are sent together and the guest
 * handles them back to back, in order, so a series costs about one round trip, not one each.
 */
export interface EngineSeries {
  /**
   * Send `steps`, then consume their answers in order: `each` gets every one as it comes, and what
   * it throws ends the series. A step that fails (or the worker dying) throws its own typed error.
   * When the requests went out together (`pipelined`), later ones already sent would run on a state
   * the caller did not expect, so a failure (or a throw from `each`) also ends the engine's worker.
   * Runs keep their own limits, a run's time limit counted from when the request before it
   * answered. `done`: the answers consumed.
   */
  series(steps: readonly EngineSeriesStep[], each: (index: number, answer: EngineSeriesAnswer) => void): Promise<{ done: number; pipelined: boolean }>;
}

/** How one restore of a snapshot differs from the saved engine. */
export interface EngineRestoreOptions {
  /**
   * Re-seed the restored engine's randomness with this seed (a fork given its own): what the
   * engine can re-seed (nano: the worker's entropy and Python's `random`; heavy: `random`).
   * Absent: it continues as the saved engine would.
   */
  seed?: number | undefined;
}

/** A saved engine state that can start any number of independent engines. */
export interface EngineSnapshot {
  /** Start a new engine from this snapshot. */
  restore(opts?: EngineRestoreOptions): Promise<Engine>;
  /** Delete the saved state. Idempotent. */
  remove(): Promise<void>;
  /**
   * Move (or write) the saved state's payload into `dir`, a directory the caller owns, and return a
   * JSON-able descriptor of it (paths in it are relative to `dir`). This snapshot is spent
   * afterwards: the caller loads it again from where `dir` ends up (the engine registry's
   * `loadEngineSnapshot`), so a directory renamed into place is never referred to by its old name.
   * Optional: engines whose state cannot leave the process leave it out.
   */
  persist?(dir: string): Promise<unknown>;
  /** What the saved state takes now (disk for checkpoints, memory for a replay history), bytes; counted against a key's snapshot quota. */
  sizeBytes?(): number;
}

/** Reported by engines whose backend or accelerator is chosen at start (e.g. the microVM). */
export interface EngineInfo {
  /** The heavy backend's name, as the engine registry lists it (HEAVY_BACKENDS). */
  backend: string;
  /** microVM: hardware virtualisation ("kvm") or software emulation ("tcg", slow). */
  accel?: "kvm" | "tcg";
  /** Why KVM is not used, when it is not. */
  accelReason?: string;
  hypervisor?: string;
}

/** The record of a sandbox's network attempts, kept by engines whose guest can reach the network. */
export interface EngineNetwork {
  /** The attempts kept (the most recent NETWORK_LOG_ENTRIES), oldest first. */
  entries(): NetworkLogEntry[];
  /** Call `listener` with each attempt as it is recorded; returns the function that stops it. */
  watch(listener: (entry: NetworkLogEntry) => void): () => void;
  /** Each `network.secrets` name → the placeholder the guest sees for it (none: {}). */
  placeholders?(): Record<string, string>;
}

/** A guest port forwarded by a listener on the host's loopback. */
export interface ExposedPort {
  /** The port on the guest's loopback. */
  port: number;
  /** The port on the host's 127.0.0.1 that forwards to it. */
  hostPort: number;
}

/** TCP ports on the guest's loopback, reached from the host (heavy tier: over the agent channel). */
export interface EnginePorts {
  /** One connection to `port` on the guest's loopback; rejects when nothing listens there. */
  connect(port: number): Promise<Duplex>;
  /** Forward a host listener (127.0.0.1, a free port) to guest `port`; resolves with the host port. Idempotent per port. */
  expose(port: number): Promise<number>;
  list(): ExposedPort[];
  /** Close the listener of guest `port` and its connections. Idempotent. */
  close(port: number): Promise<void>;
}

export interface Engine {
  /** Why the engine can no longer be used, or undefined while it can. */
  readonly closedReason: string | undefined;
  /** OS process id of the engine's worker, when it has one. */
  readonly pid: number | undefined;
  /** What runs the sandbox, when the engine says more than its tier (heavy-tier backend, accelerator). */
  readonly info?: EngineInfo | undefined;
  /** The tier running the sandbox now, for engines that change tier (tier "auto"). */
  readonly tier?: "nano" | "heavy";
  /** The network log, on engines with a network grant; absent: the guest has no network. */
  readonly network?: EngineNetwork | undefined;
  run(code: string, opts: EngineRunOptions): Promise<EngineRunResult>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
  readFile(path: string): Promise<Uint8Array>;
  list(path: string): Promise<DirEntry[]>;
  remove(path: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  makeDir(path: string): Promise<void>;
  /** Run a command (heavy tier); engines without processes leave it out. */
  exec?(argv: string[], opts: EngineExecOptions): Promise<EngineExecResult>;
  /**
   * Start a command and resolve once its process runs (heavy tier). It holds nothing of the
   * engine while it runs: other calls proceed; it ends with the engine.
   */
  spawn?(argv: string[], opts: EngineSpawnOptions): Promise<EngineProcess>;
  /** The guest's ports, on engines whose guest runs servers (heavy tier); disposal closes them. */
  readonly ports?: EnginePorts | undefined;
  /**
   * Replace the engine's seeded randomness with the stream of `seed` (nano workers: their entropy
   * source and Python's `random`). Optional capability.
   */
  reseed?(seed: number): Promise<void>;
  /** Save the engine's whole state; the engine keeps running. Optional capability. */
  /**
   * `final`: the engine is disposed right after (a pause), so it need not carry on: a backend whose
   * save stops the sandbox (gVisor's checkpoint) skips restoring a successor.
   */
  snapshot?(opts?: { final?: boolean }): Promise<EngineSnapshot>;
  /** Ends the engine and everything it started. Idempotent. */
  dispose(reason?: string): Promise<void>;
}
