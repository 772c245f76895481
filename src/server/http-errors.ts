// One table from agentbox's typed errors (and the server's own refusals) to HTTP statuses and
// the JSON error body every 4xx/5xx carries: { error: { code, name, message, ... } }.
import {
  AbortedError,
  AgentboxError,
  FileSystemError,
  FileSystemQuotaError,
  InvalidOptionsError,
  LimitError,
  PortConnectError,
  ReplayError,
  SandboxClosedError,
  SavedStateError,
  TierUnavailableError,
} from "../index.js";

/** Codes the server adds to the library's AgentboxErrorCode. */
export type ServerErrorCode =
  | "UNAUTHORIZED"
  | "NOT_FOUND"
  | "INVALID_JSON"
  | "BODY_TOO_LARGE"
  | "QUOTA_EXCEEDED"
  | "CAPACITY"
  | "SHUTTING_DOWN"
  | "SANDBOX_CLOSED"
  | "BAD_GATEWAY"
  | "CLUSTER_UNAVAILABLE"
  | "NODE_GONE"
  | "NODE_UNREACHABLE"
  | "INTERNAL";

/** A refusal by the server itself (not the library): carries its status and code. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ServerErrorCode | "INVALID_OPTIONS",
    message: string,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export interface ErrorBody {
  error: {
    code: string;
    name: string;
    message: string;
    issues?: readonly { path: string; message: string }[];
    limit?: string;
    value?: number;
    errno?: string;
    sandboxClosed?: boolean;
    [k: string]: unknown;
  };
}

export const notFound = (what: string) => new HttpError(404, "NOT_FOUND", what);

export const invalid = (path: string, message: string) =>
  new HttpError(400, "INVALID_OPTIONS", `invalid options: ${path}: ${message}`, { issues: [{ path, message }] });

const FS_STATUS: Record<string, number> = { ENOENT: 404, EEXIST: 409, ENOTEMPTY: 409, EISDIR: 409, ENOTDIR: 409, EACCES: 403, EPERM: 403, EROFS: 403 };

/** Status and body for anything a handler threw. Unknown errors become a generic 500. */
export function toHttp(e: unknown): { status: number; body: ErrorBody; headers: Record<string, string> } {
  if (e instanceof HttpError) {
    return { status: e.status, body: { error: { code: e.code, name: e.code === "INVALID_OPTIONS" ? "InvalidOptionsError" : "HttpError", message: e.message, ...e.extra } }, headers: e.headers };
  }
  if (e instanceof AgentboxError) {
    const error: ErrorBody["error"] = { code: e.code, name: e.name, message: e.message };
    let status = 500;
    if (e instanceof InvalidOptionsError) {
      status = 400;
      error.issues = e.issues;
    } else if (e instanceof FileSystemQuotaError) {
      status = 413;
      error.limit = e.limit;
      error.value = e.value;
    } else if (e instanceof LimitError) {
      // A hard stop: the run's worker was killed, so the sandbox is closed.
      status = 422;
      error.limit = e.limit;
      error.value = e.value;
      error.sandboxClosed = true;
    } else if (e instanceof FileSystemError) {
      status = FS_STATUS[e.errno] ?? 400;
      error.errno = e.errno;
    } else if (e instanceof SandboxClosedError) status = 410;
    else if (e instanceof TierUnavailableError) status = 501;
    else if (e instanceof ReplayError) {
      // The sandbox's state could not be rebuilt on the heavy tier; it lives on, on the nano tier.
      status = 409;
      if (e.cell !== undefined) error.cell = e.cell;
    }
    else if (e instanceof AbortedError) status = 400;
    else if (e instanceof SavedStateError) status = 500; // the server's state directory: the sandbox is not affected
    else if (e instanceof PortConnectError) {
      // Nothing listens on the guest port: the sandbox lives on.
      status = 502;
      error.port = e.port;
    }
    else error.sandboxClosed = true; // WorkerCrashedError, ProtocolError: the sandbox is gone
    if (e.result) error.result = e.result; // the output so far of the run or command it stopped
    return { status, body: { error }, headers: {} };
  }
  return { status: 500, body: { error: { code: "INTERNAL", name: "Error", message: "internal server error" } }, headers: {} };
}
