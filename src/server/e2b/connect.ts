// The Connect protocol (connectrpc.com/docs/protocol), JSON codec only, as E2B's in-sandbox daemon
// (envd) speaks it and the E2B SDKs call it: unary calls are a POST of a JSON message answered by
// one; server-streaming calls send one enveloped message (a flags byte, a big-endian uint32 length,
// the JSON) and get a 200 whose body is enveloped messages ending with an end-of-stream envelope
// (flags 0x02) that carries the error, if any. Errors are Connect's codes and `{ code, message }`.
import type { Context, Hono } from "hono";
import { AbortedError, AgentboxError, FileSystemError, FileSystemQuotaError, InvalidOptionsError, LimitError, SandboxClosedError, TierUnavailableError } from "../../index.js";
import { readCappedBody } from "../body.js";
import { HttpError } from "../http-errors.js";

export type ConnectCode =
  | "canceled"
  | "unknown"
  | "invalid_argument"
  | "deadline_exceeded"
  | "not_found"
  | "already_exists"
  | "permission_denied"
  | "resource_exhausted"
  | "failed_precondition"
  | "aborted"
  | "out_of_range"
  | "unimplemented"
  | "internal"
  | "unavailable"
  | "data_loss"
  | "unauthenticated";

/** HTTP status of a unary error, by code (the protocol's table). */
const STATUS: Record<ConnectCode, number> = {
  canceled: 499,
  unknown: 500,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  out_of_range: 400,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  data_loss: 500,
  unauthenticated: 401,
};

/** An error with a Connect code, thrown by handlers. */
export class ConnectError extends Error {
  constructor(
    readonly code: ConnectCode,
    message: string,
  ) {
    super(message);
    this.name = "ConnectError";
  }
}

const FS_CODES: Record<string, ConnectCode> = {
  ENOENT: "not_found",
  EEXIST: "already_exists",
  ENOTEMPTY: "failed_precondition",
  EISDIR: "invalid_argument",
  ENOTDIR: "invalid_argument",
  EACCES: "permission_denied",
  EPERM: "permission_denied",
  EROFS: "permission_denied",
};

/** Anything a handler threw, as a Connect error (agentbox's typed errors keep their message). */
export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  if (e instanceof HttpError) {
    const code: ConnectCode = e.status === 404 ? "not_found" : e.status === 401 ? "unauthenticated" : e.status === 413 ? "resource_exhausted" : e.status === 429 ? "resource_exhausted" : e.status < 500 ? "invalid_argument" : "unavailable";
    return new ConnectError(code, e.message);
  }
  if (e instanceof AgentboxError) {
    let code: ConnectCode = "internal";
    if (e instanceof InvalidOptionsError) code = "invalid_argument";
    else if (e instanceof FileSystemQuotaError) code = "resource_exhausted";
    else if (e instanceof FileSystemError) code = FS_CODES[e.errno] ?? "invalid_argument";
    else if (e instanceof LimitError) code = e.limit === "timeoutMs" ? "deadline_exceeded" : "resource_exhausted";
    else if (e instanceof SandboxClosedError) code = "unavailable";
    else if (e instanceof TierUnavailableError) code = "unimplemented";
    else if (e instanceof AbortedError) code = "canceled";
    return new ConnectError(code, e.message);
  }
  return new ConnectError("internal", "internal server error");
}

/** The unary error response: the code's HTTP status and `{ code, message }`. */
export function connectErrorResponse(e: ConnectError): Response {
  return new Response(JSON.stringify({ code: e.code, message: e.message }), { status: STATUS[e.code], headers: { "content-type": "application/json" } });
}

/** Flags of an envelope: compressed (never used here), end of stream. */
const FLAG_COMPRESSED = 0x01;
const FLAG_END = 0x02;

/** One envelope around `json`. */
export function envelope(json: unknown, flags = 0): Uint8Array {
  const body = Buffer.from(JSON.stringify(json), "utf8");
  const out = Buffer.alloc(5 + body.length);
  out[0] = flags;
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

/** The single message of a server-streaming request body (enveloped, uncompressed, not end-of-stream). */
export function decodeSingleEnvelope(bytes: Uint8Array): unknown {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 5) throw new ConnectError("invalid_argument", "request body is not an enveloped message (shorter than its 5-byte prefix)");
  const flags = b[0]!;
  if (flags & FLAG_COMPRESSED) throw new ConnectError("unimplemented", "compressed messages are not supported (send Connect-Content-Encoding identity)");
  if (flags & FLAG_END) throw new ConnectError("invalid_argument", "request body holds an end-of-stream envelope, not a message");
  const n = b.readUInt32BE(1);
  if (n !== b.length - 5) throw new ConnectError("invalid_argument", `request envelope says ${n} bytes but ${b.length - 5} follow (exactly one message expected)`);
  return parseJson(b.subarray(5));
}

function parseJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown;
  } catch (e) {
    throw new ConnectError("invalid_argument", `message is not valid JSON: ${(e as Error).message}`);
  }
}

/** The request body as bytes, refused (resource_exhausted) past `max` whatever Content-Length claims. */
export function readCapped(req: Request, max: number): Promise<Uint8Array> {
  return readCappedBody(req, max, () => new ConnectError("resource_exhausted", `request body is over the server's limit of ${max} bytes`));
}

/** An object message, or invalid_argument naming what it was. */
function asObject(v: unknown): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ConnectError("invalid_argument", "a message must be a JSON object");
  return v as Record<string, unknown>;
}

export interface RpcOptions {
  /** Largest request message, bytes. */
  maxBytes: number;
  log: (line: string) => void;
}

/** Register unary method `/${service}/${method}`: the handler gets the request message, returns the response message. */
export function unary<E extends object>(app: Hono<E>, service: string, method: string, o: RpcOptions, handler: (msg: Record<string, unknown>, c: Context<E>) => Promise<unknown>): void {
  app.post(`/${service}/${method}`, async (c) => {
    try {
      const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
      if (type !== "application/json") throw new ConnectError("unimplemented", `unary ${method} takes application/json (the JSON codec), not ${JSON.stringify(type)}`);
      const bytes = await readCapped(c.req.raw, o.maxBytes);
      const msg = asObject(bytes.byteLength === 0 ? {} : parseJson(bytes));
      return c.json((await handler(msg, c)) ?? {});
    } catch (e) {
      const ce = toConnectError(e);
      if (ce.code === "internal") o.log(`error: ${service}/${method}: ${(e as Error)?.stack ?? String(e)}`);
      return connectErrorResponse(ce);
    }
  });
}

/** How often a stream says it is alive when nothing else is sent: the client's Keepalive-Ping-Interval (seconds, held to 1–300), else 50 s as envd. */
export function keepaliveMs(header: string | undefined): number {
  const s = Number(header);
  return (Number.isFinite(s) && s > 0 ? Math.min(Math.max(s, 1), 300) : 50) * 1000;
}

/** What a server-streaming handler sends with. */
export interface StreamSink {
  /** Send one response message. */
  send(msg: unknown): void;
  /** Ends when the client hangs up. */
  signal: AbortSignal;
}

/**
 * Register server-streaming method `/${service}/${method}`. The handler sends messages through the
 * sink and resolves when the stream is done; what it throws ends the stream with that error.
 */
export function serverStream<E extends object>(app: Hono<E>, service: string, method: string, o: RpcOptions, handler: (msg: Record<string, unknown>, sink: StreamSink, c: Context<E>) => Promise<void>): void {
  app.post(`/${service}/${method}`, async (c) => {
    let msg: Record<string, unknown>;
    try {
      const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
      if (type !== "application/connect+json") throw new ConnectError("unimplemented", `streaming ${method} takes application/connect+json, not ${JSON.stringify(type)}`);
      msg = asObject(decodeSingleEnvelope(await readCapped(c.req.raw, o.maxBytes)));
    } catch (e) {
      return connectErrorResponse(toConnectError(e));
    }
    const hangUp = new AbortController();
    const clientSignal = c.req.raw.signal;
    const onClientAbort = () => hangUp.abort();
    clientSignal.addEventListener("abort", onClientAbort, { once: true });
    // Once the client has hung up (cancel) the controller refuses enqueue/close: nothing is sent then.
    let open = true;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        const sink: StreamSink = {
          send: (m) => {
            if (!open || hangUp.signal.aborted) return;
            try {
              controller.enqueue(envelope(m));
            } catch {
              open = false; // the stream was cancelled (the client hung up)
            }
          },
          signal: hangUp.signal,
        };
        const finish = (end: unknown) => {
          if (!open) return;
          open = false;
          clientSignal.removeEventListener("abort", onClientAbort);
          if (hangUp.signal.aborted) return;
          try {
            controller.enqueue(envelope(end, FLAG_END));
            controller.close();
          } catch {
            // Cancelled by the client's hang-up: nobody to tell.
          }
        };
        handler(msg, sink, c).then(
          () => finish({}),
          (e: unknown) => {
            const ce = toConnectError(e);
            if (ce.code === "internal") o.log(`error: ${service}/${method}: ${(e as Error)?.stack ?? String(e)}`);
            finish({ error: { code: ce.code, message: ce.message } });
          },
        );
      },
      cancel: () => {
        open = false;
        clientSignal.removeEventListener("abort", onClientAbort);
        hangUp.abort();
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "application/connect+json" } });
  });
}
