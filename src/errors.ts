// The error classes every surface of agentbox throws. One root (`AgentboxError`) with a stable
// string `code`, one subclass per cause; messages name the option or limit and its value.
// A guest exception (Python raising) is never one of these: it comes back in `result.error`.

/**
 * The limits a run or a sandbox can hit, named after the option (`limits.*`) that sets them. The
 * one list: protocol/ and policy/ import it (this module is the lowest leaf).
 */
export const LIMIT_NAMES = ["timeoutMs", "memoryMb", "outputBytes", "vfsBytes", "vfsFiles"] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];

export type AgentboxErrorCode =
  | "INVALID_OPTIONS"
  | "TIMEOUT"
  | "MEMORY_LIMIT"
  | "OUTPUT_LIMIT"
  | "FS_QUOTA"
  | "FS_ERROR"
  | "SANDBOX_CLOSED"
  | "TIER_UNAVAILABLE"
  | "WORKER_CRASHED"
  | "PROTOCOL_ERROR"
  | "ABORTED"
  | "IMAGE_BUILD"
  | "REPLAY_FAILED"
  | "PORT_UNREACHABLE"
  | "SAVED_STATE_INVALID";

/**
 * What a run or command had produced when a limit or the caller's signal stopped it in a way the
 * call could not return normally (the worker was killed, the sandbox ended, the call was aborted).
 * Output the guest wrote before that is never dropped: it travels on the error as `err.result`.
 */
export interface PartialResult {
  stdout: string;
  stderr: string;
  /** 137 (killed) for a stopped command or run. */
  exitCode: number;
  /** The limit that stopped it, when one did (absent for an abort). */
  limitHit?: LimitName;
}

export class AgentboxError extends Error {
  readonly code: AgentboxErrorCode;
  /** The output so far of the run or command this error stopped, when it stopped one. */
  result?: PartialResult;
  constructor(code: AgentboxErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Options failed validation; `issues` lists each bad field by its dotted path. */
export class InvalidOptionsError extends AgentboxError {
  readonly issues: readonly { path: string; message: string }[];
  constructor(issues: readonly { path: string; message: string }[]) {
    super("INVALID_OPTIONS", `invalid options: ${issues.map((i) => `${i.path || "(root)"}: ${i.message}`).join("; ")}`);
    this.issues = issues;
  }
}

/** Base of the errors that say a limit was enforced; `limit` names the option, `value` its setting. */
export abstract class LimitError extends AgentboxError {
  readonly limit: LimitName;
  readonly value: number;
  constructor(code: AgentboxErrorCode, limit: LimitName, value: number, message: string) {
    super(code, message);
    this.limit = limit;
    this.value = value;
  }
}

export class TimeoutError extends LimitError {
  constructor(timeoutMs: number, detail = "the worker did not stop after the interrupt and was killed") {
    super("TIMEOUT", "timeoutMs", timeoutMs, `time limit of ${timeoutMs} ms reached (limits.timeoutMs); ${detail}`);
  }
}

export class MemoryLimitError extends LimitError {
  constructor(memoryMb: number, detail = "the worker was killed") {
    super("MEMORY_LIMIT", "memoryMb", memoryMb, `memory limit of ${memoryMb} MB reached (limits.memoryMb); ${detail}`);
  }
}

export class OutputLimitError extends LimitError {
  constructor(outputBytes: number, detail = "the worker kept writing and was killed") {
    super("OUTPUT_LIMIT", "outputBytes", outputBytes, `output limit of ${outputBytes} bytes reached (limits.outputBytes); ${detail}`);
  }
}

export class FileSystemQuotaError extends LimitError {
  constructor(limit: "vfsBytes" | "vfsFiles", value: number, path: string) {
    const what = limit === "vfsBytes" ? `${value} bytes` : `${value} files`;
    super("FS_QUOTA", limit, value, `file system quota of ${what} reached (limits.${limit}) while writing ${JSON.stringify(path)}`);
  }
}

/** A file operation from the host failed inside the sandbox (no such file, not a directory, ...). */
export class FileSystemError extends AgentboxError {
  readonly path: string;
  readonly errno: string;
  constructor(path: string, errno: string, message: string) {
    super("FS_ERROR", `${message}: ${JSON.stringify(path)}`);
    this.path = path;
    this.errno = errno;
  }
}

export class SandboxClosedError extends AgentboxError {
  readonly reason: string;
  constructor(reason: string) {
    super("SANDBOX_CLOSED", `sandbox is closed (${reason}); create a new one with Sandbox.create()`);
    this.reason = reason;
  }
}

/**
 * Sandbox.restore() of a snapshot whose saved state was deleted (snapshot.remove()). A closed
 * sandbox to every surface (code SANDBOX_CLOSED), told apart by its class.
 */
export class SnapshotRemovedError extends SandboxClosedError {
  constructor() {
    super("its snapshot was removed");
    this.message = "this snapshot was removed (snapshot.remove()); take a new one with sb.snapshot() and restore that";
  }
}

export class TierUnavailableError extends AgentboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("TIER_UNAVAILABLE", message, options);
  }
}

/** The worker process died or misbehaved in a way no limit explains. The sandbox is closed. */
export class WorkerCrashedError extends AgentboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("WORKER_CRASHED", message, options);
  }
}

/** The worker sent something that is not a valid protocol frame. The sandbox is closed. */
export class ProtocolError extends AgentboxError {
  constructor(message: string) {
    super("PROTOCOL_ERROR", message);
  }
}

/** Attach the output so far of a stopped run or command to `e` (when it is an AgentboxError without one). */
export function withPartialResult(e: unknown, out: { stdout: string; stderr: string }): unknown {
  if (e instanceof AgentboxError && e.result === undefined) {
    e.result = { stdout: out.stdout, stderr: out.stderr, exitCode: 137 };
    if (e instanceof LimitError) e.result.limitHit = e.limit;
  }
  return e;
}

/**
 * Rebuilding a sandbox's state by replaying its cells failed or cannot be done.
 *
 * Tier "auto": the sandbox could not move to the heavy tier: a cell that ran on the nano tier
 * raised (or ran out of time) when replayed on the heavy tier (`cell` says which runCode call,
 * `guestError` what it raised), or its files could not be copied (`cell` undefined). Nothing of the
 * cell that asked for the move ran; the sandbox stays on the nano tier, usable, as it was.
 *
 * Nano snapshots (engines/replay): `snapshot()` refuses a history that cannot be replayed (a cell
 * stopped by its time limit, the history past its cap — the message names it), and
 * `Sandbox.restore` fails when a replayed cell does not end as it first did (`cell`: its runCode
 * call in the snapshotted sandbox). The sandbox snapshotted is never affected.
 */
export class ReplayError extends AgentboxError {
  /** The runCode call (1 = the sandbox's first) whose replay failed; undefined when copying files failed. */
  readonly cell: number | undefined;
  /** What the replayed cell raised on the heavy tier, when it raised. */
  readonly guestError: { name: string; message: string; traceback: string } | undefined;
  constructor(message: string, detail: { cell?: number; guestError?: { name: string; message: string; traceback: string }; cause?: unknown } = {}) {
    super("REPLAY_FAILED", message, detail.cause !== undefined ? { cause: detail.cause } : undefined);
    this.cell = detail.cell;
    this.guestError = detail.guestError;
  }
}

/**
 * A saved state read back from disk (`SandboxSnapshot.load`, the server's `--state-dir`) cannot be
 * used: a file is missing, too big, not what its checksum says, names a path outside its
 * directory, or refers to an image this host does not have. The message names the file and why.
 * Nothing of it was started.
 */
export class SavedStateError extends AgentboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("SAVED_STATE_INVALID", message, options);
  }
}

/** The caller's AbortSignal fired. */
export class AbortedError extends AgentboxError {
  constructor(message = "run aborted by the caller's signal") {
    super("ABORTED", message);
  }
}

/** Building a heavy-tier image failed (apt could not resolve or fetch a package, ...). */
export class ImageBuildError extends AgentboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("IMAGE_BUILD", message, options);
  }
}

/**
 * A connection to a port on the guest's loopback failed: nothing listens there (ECONNREFUSED) or
 * it did not answer. The sandbox lives on.
 */
export class PortConnectError extends AgentboxError {
  readonly port: number;
  constructor(port: number, detail: string) {
    super("PORT_UNREACHABLE", `cannot connect to port ${port} in the sandbox (${detail}); is a server listening on 127.0.0.1:${port} or 0.0.0.0:${port} there?`);
    this.port = port;
  }
}
