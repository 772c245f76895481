// How the Python guest's HTTP requests reach the host's broker (python/network.guest.py is the
// guest half). Like the display channel, a character device the worker made: the interpreter holds
// a file descriptor, never a JavaScript object. A write is one whole request (a line of JSON, then
// the body); it is checked here and sent to the host as the same `fetch` frame JavaScript's fetch
// sends, so the host's grant, address checks, pinning, caps and log apply unchanged. A read blocks
// the interpreter thread (Atomics.wait) until the host's answer arrives, then serves it (a line of
// JSON, then the body) until end of file. The time limit's interrupt ends the wait: the read fails
// with EINTR, and CPython's retry loop checks signals and raises KeyboardInterrupt.
// Everything written is hostile: sizes are capped before anything is decoded, and a guest can have
// one request at a time. Made after every restore, like the display channel.
import { fetchRequestProblem } from "../../protocol/caps.js";
import type { FetchResult } from "../../protocol/messages.js";
import type { DeviceFs } from "./display-channel.js";

/** A major device number Emscripten does not hand out; the display channel has 240. */
const DEVICE_MAJOR = 241;
const NODE_PATH = "/dev/.agentbox-net";
const O_RDWR = 2;
const NEWLINE = 0x0a;
/** Emscripten's errno numbers (WASI numbering). */
const E = { EBUSY: 10, EINTR: 27, EINVAL: 28 } as const;
/**
 * Longest request line (method, URL, headers as JSON). Far more than real requests need; small
 * enough that parsing the worst JSON a guest can write stays well inside the thread's JS heap.
 */
const HEAD_MAX_BYTES = 1024 * 1024;
/** How long one wait lasts before the interrupt word is looked at again. */
const WAIT_SLICE_MS = 10;

type Failure = Extract<FetchResult, { ok: false }>["error"] | { name: "TimeoutError"; message: string };

/** Where the host's answers arrive (from the worker's main thread, which reads the host's frames). */
export interface NetInbox {
  /** The next answer, if one is there; never blocks. */
  take(): unknown;
  /** Block until an answer may have arrived, or `ms` passed. */
  wait(ms: number): void;
}

export interface NetLink {
  inbox: NetInbox;
  /** Sends a frame to the host. */
  send(message: unknown): void;
  /** The interrupt words (see common.ts): [signal, reason, current run id, ...]. */
  words: Int32Array;
  /** Called while a request waits (output that waits gets out). */
  idle(): void;
  now(): number;
}

export class NetChannel {
  /** The descriptor the guest's connections write requests to and read answers from. */
  readonly fd: number;
  /** The sandbox's grant: absent, every request is refused here. */
  grant: { maxRequestBytes: number } | undefined;
  private seq = 0;
  /** The request waiting for the host's answer. */
  private pending: { id: number; req: number; deadline: number; timeoutMs: number } | undefined;
  /** The answer being read, and how far. */
  private answer: Buffer | undefined;
  private offset = 0;

  constructor(
    fs: DeviceFs,
    private readonly link: NetLink,
  ) {
    const dev = fs.makedev(DEVICE_MAJOR, 0);
    if (fs.getDevice(dev)) throw new Error(`device ${DEVICE_MAJOR}:0 is taken`);
    fs.registerDevice(dev, {
      close: () => undefined,
      write: (_stream, buffer, offset, length) => {
        if (this.pending) throw new fs.ErrnoError(E.EBUSY); // read the answer first
        this.submit(new Uint8Array(buffer.buffer, buffer.byteOffset + offset, length));
        return length;
      },
      read: (_stream, buffer, offset, length) => {
        if (this.pending) this.await(() => new fs.ErrnoError(E.EINTR));
        const answer = this.answer;
        if (!answer) return 0;
        const n = Math.min(length, answer.length - this.offset);
        new Uint8Array(buffer.buffer, buffer.byteOffset + offset, n).set(answer.subarray(this.offset, this.offset + n));
        this.offset += n;
        if (n === 0) this.answer = undefined; // end of file, once
        return n;
      },
      llseek: () => {
        throw new fs.ErrnoError(E.EINVAL);
      },
    });
    // Opened, then unlinked: no path names it.
    fs.mkdev(NODE_PATH, 0o600, dev);
    this.fd = fs.open(NODE_PATH, O_RDWR).fd;
    fs.unlink(NODE_PATH);
  }

  /** A run ended: nothing of it is left to read, and its request's answer will be dropped. */
  endRun(): void {
    this.pending = undefined;
    this.answer = undefined;
  }

  private submit(bytes: Uint8Array): void {
    this.answer = undefined;
    const refuse = (name: Failure["name"], message: string, denied = false) =>
      this.reply({ ok: false, error: { name, message, ...(denied ? { code: "NETWORK_DENIED" as const } : {}) } });
    const grant = this.grant;
    if (!grant) return refuse("TypeError", "no network: the sandbox was created without a network grant (network: { allow: [...] })", true);
    const runId = Atomics.load(this.link.words, 2);
    if (runId === 0) return refuse("TypeError", "no run in progress");
    const nl = bytes.subarray(0, HEAD_MAX_BYTES + 1).indexOf(NEWLINE);
    if (nl < 0) return refuse("TypeError", "malformed request: no header line within its size cap");
    const body = bytes.subarray(nl + 1);
    if (body.length > grant.maxRequestBytes) {
      return refuse("RangeError", `the request body of ${body.length} bytes is larger than network.maxRequestBytes (${grant.maxRequestBytes})`, true);
    }
    let head: unknown;
    try {
      head = JSON.parse(Buffer.from(bytes.subarray(0, nl)).toString("utf8"));
    } catch {
      return refuse("TypeError", "malformed request: the header line is not JSON");
    }
    const problem = requestProblem(head);
    if (typeof problem === "string") return refuse("TypeError", problem);
    const { method, url, headers, timeoutMs } = problem;
    const req = ++this.seq;
    const wait = timeoutMs ?? 0;
    this.pending = { id: runId, req, deadline: wait > 0 ? this.link.now() + wait : Infinity, timeoutMs: wait };
    this.link.send({ type: "fetch", id: runId, req, url, method, headers, ...(body.length > 0 ? { body: Buffer.from(body).toString("base64") } : {}) });
  }

  /** Block until the pending request's answer is in (or the guest's own timeout passed); an interrupt throws `interrupted()`. */
  private await(interrupted: () => Error): void {
    const p = this.pending!;
    const { inbox, words } = this.link;
    for (;;) {
      let m: unknown;
      while ((m = inbox.take()) !== undefined) {
        const r = m as FetchResult;
        if (r.type !== "fetchResult" || r.id !== p.id || r.req !== p.req) continue; // an abandoned request's
        this.pending = undefined;
        if (!r.ok) return this.reply({ ok: false, error: r.error });
        return this.reply({ ok: true, status: r.status, statusText: r.statusText, url: r.url, redirected: r.redirected, headers: r.headers }, Buffer.from(r.body, "base64"));
      }
      if (Atomics.load(words, 0) === 2) {
        // The time limit (or an abort): the request is abandoned and the read fails with EINTR;
        // CPython checks signals before it retries, and raises KeyboardInterrupt. A guest that
        // ignores SIGINT reads this answer on the retry instead.
        this.pending = undefined;
        this.reply({ ok: false, error: { name: "TypeError", message: "the request was abandoned: the run was interrupted" } });
        throw interrupted();
      }
      const left = p.deadline - this.link.now();
      if (left <= 0) {
        this.pending = undefined;
        return this.reply({ ok: false, error: { name: "TimeoutError", message: `timed out after ${p.timeoutMs} ms (the timeout the request was given)` } });
      }
      this.link.idle();
      inbox.wait(Math.min(WAIT_SLICE_MS, left));
    }
  }

  private reply(head: object, body?: Buffer): void {
    const line = Buffer.from(`${JSON.stringify(head)}\n`);
    this.answer = body ? Buffer.concat([line, body]) : line;
    this.offset = 0;
  }
}

interface CheckedRequest {
  method: string;
  url: string;
  headers: [string, string][];
  timeoutMs: number | undefined;
}

/** The request line's fields, checked against the fetch frame's caps; or what is wrong with it. */
export function requestProblem(head: unknown): CheckedRequest | string {
  if (typeof head !== "object" || head === null || Array.isArray(head)) return "malformed request: not an object";
  const { method, url, headers, timeoutMs, ...rest } = head as Record<string, unknown>;
  if (Object.keys(rest).length > 0) return "malformed request: unknown fields";
  if (typeof method !== "string") return `invalid method ${JSON.stringify(String(method).slice(0, 32))}`;
  if (typeof url !== "string") return "malformed request: no URL";
  if (!Array.isArray(headers)) return "malformed request: headers are not a list";
  const problem = fetchRequestProblem(method, url, headers);
  if (problem) return problem;
  if (timeoutMs !== undefined && (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs < 0)) return "malformed request: invalid timeoutMs";
  return { method, url, headers: headers as [string, string][], timeoutMs: timeoutMs === undefined ? undefined : Math.min(timeoutMs, 2 ** 31) };
}
