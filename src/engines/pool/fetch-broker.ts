// The host half of a sandbox's network grant: the worker (which has no network at all) asks for a
// request; this checks the URL against the grant, resolves the name on the host and checks every
// address (policy/network.ts; `deny` entries first, winning over `allow`), then performs the request with node:http/https connected to exactly
// the addresses it checked (a pinned `lookup`: no second resolution, so DNS rebinding between the
// check and the connection has nothing to rebind), one connection per hop, never pooled. It follows
// redirects itself so every hop is checked the same way, enforces the grant's caps (body sizes,
// per-request timeout within the run's deadline, requests in flight), records every attempt in
// the sandbox's network log, and answers with status, headers and body. Refusals and failures are
// answers too (a guest TypeError/RangeError naming the rule), never host errors.
// Secrets (policy/secrets.ts): the guest's URL and headers are kept as the guest wrote them, with
// placeholders; each hop's values go in only as it is sent, for the secrets its URL may receive,
// and everything that goes back (answer, error, log entry, the next hop's URL) is scrubbed first.
import dns from "node:dns/promises";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { checkAddresses, checkUrl, parseAllowList, schemeAndPort, urlForLog, type AllowRule, type NetworkGrant, type NetworkLogEntry } from "../../policy/network.js";
import { SecretSet } from "../../policy/secrets.js";
import type { FetchResult, WorkerMessage } from "../../protocol/messages.js";
import { LoggedAttempt, NetworkLog } from "./network-log.js";

type FetchRequest = Extract<WorkerMessage, { type: "fetch" }>;
type Failure = Extract<FetchResult, { ok: false }>["error"];

/** A host name's addresses, looked up on the host. */
export type Resolver = (host: string) => Promise<string[]>;

/**
 * The system's resolver (getaddrinfo: /etc/hosts, then DNS), every address in its order. Called
 * through the module object, so a test can map names in its own resolver (mock.method).
 */
export const systemResolver: Resolver = async (host) => (await dns.lookup(host, { all: true, verbatim: true })).map((a) => a.address);

export interface FetchBrokerOptions {
  /** Default: systemResolver. */
  resolve?: Resolver;
  /**
   * Opens a hop's connection instead of Node's own (which, like this, gets the pinned `lookup`
   * in its options). Only tests set it: a stand-in for the internet on loopback.
   */
  createConnection?: http.RequestOptions["createConnection"];
  /** Where attempts are recorded (default: a new ring of NETWORK_LOG_ENTRIES). */
  log?: NetworkLog;
  /**
   * The grant's secrets with the placeholders the guest's environment holds (default: a new set
   * from `grant.secrets`, with fresh placeholders: see `secrets.placeholders()`).
   */
  secrets?: SecretSet;
}

/** Headers a guest may not set: connection management, and Host (the URL decides where it goes). */
const DROPPED_HEADERS = new Set(["host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length", "expect"]);
/** Dropped when a redirect leaves the origin, as fetch does. */
const CREDENTIAL_HEADERS = ["authorization", "cookie"];
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const NULL_BODY = new Set([101, 103, 204, 205, 304]);
/** Requests queued or in flight per sandbox; more are refused at once. */
const MAX_QUEUED = 64;
const MAX_RESPONSE_HEADERS = 256;
/** Decode what a server sends even when it cuts a compressed stream short (as fetch does). */
const ZLIB_LENIENT = { flush: zlib.constants.Z_SYNC_FLUSH, finishFlush: zlib.constants.Z_SYNC_FLUSH };
const BROTLI_LENIENT = { flush: zlib.constants.BROTLI_OPERATION_FLUSH, finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH };

class FetchFailure extends Error {
  /** NETWORK_DENIED once the grant or a cap refused the request (Attempt.deny). */
  code: "NETWORK_DENIED" | undefined;

  constructor(
    readonly kind: "TypeError" | "RangeError",
    message: string,
  ) {
    super(message);
  }

  get error(): Failure {
    return { name: this.kind, message: this.message, ...(this.code ? { code: this.code } : {}) };
  }
}

/** The log's view of a request's URL: scheme://host[:port]/path, host and port ("" and null when it did not parse). */
function logTarget(raw: string): Pick<NetworkLogEntry, "url" | "host" | "port"> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { url: "", host: "", port: null };
  }
  return { url: urlForLog(url), host: url.hostname, port: url.protocol === "http:" || url.protocol === "https:" ? schemeAndPort(url).port : null };
}

/** One hop of a request, from the first check to the last byte: recorded in the log exactly once. */
class Attempt extends LoggedAttempt {
  /** Set once the address check let it through: why. */
  private allowedBecause: string | undefined;

  constructor(log: NetworkLog, secrets: SecretSet, raw: string, method: string, hop: number) {
    super(log, method, logTarget(raw), hop, (text) => secrets.scrub(text));
  }

  allow(reason: string, address: string): void {
    this.allowedBecause = reason;
    this.address = address;
  }

  /** The grant or a cap refused it: nothing was sent. Returns `failure`, to throw. */
  deny(failure: FetchFailure, reason = failure.message): FetchFailure {
    this.record("denied", reason);
    failure.code = "NETWORK_DENIED";
    return failure;
  }

  /** It ended: well (no `error`), or with `error` after being allowed, or before a decision. */
  end(error?: string): void {
    if (this.allowedBecause !== undefined) this.record("allowed", this.allowedBecause, error);
    else this.record("error", error ?? "no connection was attempted");
  }
}

export class FetchBroker {
  /** Every attempt of this sandbox's guest, allowed or not. */
  readonly log: NetworkLog;
  /** The grant's secrets: their placeholders are what the guest's environment must hold. */
  readonly secrets: SecretSet;
  private readonly rules: AllowRule[];
  private readonly deny: AllowRule[];
  private readonly resolve: Resolver;
  private readonly createConnection: FetchBrokerOptions["createConnection"];
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly controllers = new Set<AbortController>();
  /** Bumped when a run ends: answers for requests of earlier runs are dropped. */
  private generation = 0;

  constructor(
    private readonly grant: NetworkGrant,
    options: FetchBrokerOptions = {},
  ) {
    this.rules = parseAllowList(grant.allow);
    this.deny = parseAllowList(grant.deny ?? []);
    this.resolve = options.resolve ?? systemResolver;
    this.createConnection = options.createConnection;
    this.log = options.log ?? new NetworkLog();
    this.secrets = options.secrets ?? new SecretSet(grant.secrets ?? []);
  }

  /** Handle one request of the run in progress; `reply` is called once, unless the run ended first. */
  handle(m: FetchRequest, deadline: number, reply: (r: FetchResult) => void): void {
    const gen = this.generation;
    const answer = (r: FetchResult) => {
      if (gen === this.generation) reply(r);
    };
    if (this.active + this.waiting.length >= MAX_QUEUED) {
      const f = new Attempt(this.log, this.secrets, m.url, m.method, 0).deny(new FetchFailure("RangeError", `fetch: more than ${MAX_QUEUED} requests queued or in flight`));
      return answer(fail(m, f.error, this.secrets));
    }
    this.perform(m, deadline, gen).then(
      (ok) => answer(ok),
      (e: unknown) => answer(fail(m, e instanceof FetchFailure ? e.error : { name: "TypeError", message: `fetch failed: ${describe(e)}` }, this.secrets)),
    );
  }

  /** The run ended: abort what is in flight and refuse what is queued (each still gets its log entry). */
  endRun(): void {
    this.generation++;
    for (const c of this.controllers) c.abort();
    this.controllers.clear();
    for (const wake of this.waiting.splice(0)) wake(); // of an earlier generation now: rejects
    this.active = 0;
  }

  private async perform(m: FetchRequest, deadline: number, gen: number): Promise<FetchResult> {
    const g = this.grant;
    let method = m.method;
    let body: Buffer | undefined = m.body !== undefined ? Buffer.from(m.body, "base64") : undefined;
    let attempt = new Attempt(this.log, this.secrets, m.url, method, 0);
    if (body && body.length > g.maxRequestBytes) {
      throw attempt.deny(new FetchFailure("RangeError", `fetch: the request body of ${body.length} bytes is larger than network.maxRequestBytes (${g.maxRequestBytes})`));
    }
    const headers = new Headers();
    for (const [k, v] of m.headers) {
      try {
        if (!DROPPED_HEADERS.has(k.toLowerCase())) headers.append(k, v);
      } catch {
        throw attempt.deny(new FetchFailure("TypeError", `fetch: invalid header ${JSON.stringify(k.slice(0, 64))}`));
      }
    }
    let url = this.allowedUrl(m.url, "fetch", attempt);
    let what = "fetch";
    try {
      await this.slot(gen);
    } catch (e) {
      attempt.end("the run ended before the request was sent");
      throw e;
    }
    const controller = new AbortController();
    this.controllers.add(controller);
    const budget = Math.min(g.timeoutMs, Math.max(0, deadline - Date.now()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, budget);
    try {
      for (let hop = 0; ; hop++) {
        const addresses = await this.addresses(url, attempt, what, controller.signal);
        const payload = body && method !== "GET" && method !== "HEAD" ? body : undefined;
        const res = await this.send(url, method, headers, payload, addresses, controller.signal, attempt);
        const status = res.statusCode ?? 0;
        attempt.status = status;
        const location = res.headers.location;
        if (REDIRECTS.has(status) && location !== undefined && g.maxRedirects > 0) {
          res.destroy();
          attempt.end();
          let next: URL;
          try {
            // Scrubbed: a server may put a value it got into the Location; the next hop gets it
            // again only if its URL may (a placeholder otherwise), and the guest never sees it.
            next = new URL(this.secrets.scrub(new URL(this.secrets.scrub(location), url).href));
          } catch {
            throw new FetchFailure("TypeError", `fetch: ${url.host} redirected to an invalid URL`);
          }
          if (status === 303 || ((status === 301 || status === 302) && method === "POST")) {
            method = method === "HEAD" ? "HEAD" : "GET";
            body = undefined;
            headers.delete("content-type");
          }
          if (next.origin !== url.origin) for (const h of CREDENTIAL_HEADERS) headers.delete(h);
          attempt = new Attempt(this.log, this.secrets, next.href, method, hop + 1);
          if (hop >= g.maxRedirects) throw attempt.deny(new FetchFailure("TypeError", `fetch: more than ${g.maxRedirects} redirects (network.maxRedirects)`));
          what = `redirect from ${url.host}`;
          url = this.allowedUrl(next.href, what, attempt);
          continue;
        }
        const data = this.secrets.scrub(await readBody(res, method, g.maxResponseBytes, url.host, attempt));
        attempt.end();
        const out: [string, string][] = [];
        const scrub = (t: string) => this.secrets.scrub(t);
        for (let i = 0; i + 1 < res.rawHeaders.length && out.length < MAX_RESPONSE_HEADERS; i += 2) out.push([scrub(res.rawHeaders[i]!.toLowerCase()), scrub(res.rawHeaders[i + 1]!)]);
        return { type: "fetchResult", id: m.id, req: m.req, ok: true, status, statusText: scrub(res.statusMessage ?? ""), url: scrub(url.href), redirected: hop > 0, headers: out, body: data.toString("base64") };
      }
    } catch (e) {
      const failure = timedOut
        ? new FetchFailure("TypeError", `fetch to ${url.host} timed out after ${budget} ms (network.timeoutMs ${g.timeoutMs}, or the run's own time limit)`)
        : e instanceof FetchFailure
          ? e
          : new FetchFailure("TypeError", controller.signal.aborted ? "fetch: the run ended" : `fetch to ${url.host} failed: ${describe(e)}`);
      attempt.end(failure.message);
      throw failure;
    } finally {
      clearTimeout(timer);
      this.controllers.delete(controller);
      this.release(gen);
    }
  }

  /** The URL, if the grant lets it through; else the refusal (recorded), naming the grant. */
  private allowedUrl(raw: string, what: string, attempt: Attempt): URL {
    const r = checkUrl(raw, this.rules, this.deny);
    if (!r.ok) {
      // A deny entry's refusal names that entry; listing what is allowed would not help.
      const message = r.denied !== undefined ? `${what} refused: ${r.message}` : `${what} refused: ${r.message}; allowed: ${this.grant.allow.join(", ")}`;
      throw attempt.deny(new FetchFailure("TypeError", message), r.reason ?? r.message);
    }
    return r.url;
  }

  /**
   * The addresses a hop may connect to: the IP literal, or every address the name resolves to on
   * the host, each checked (checkAddresses). The connection is pinned to exactly these.
   */
  private async addresses(url: URL, attempt: Attempt, what: string, signal: AbortSignal): Promise<string[]> {
    const host = bare(url.hostname);
    let addresses: string[];
    if (net.isIP(host)) addresses = [host];
    else {
      try {
        addresses = [...new Set(await abortable(this.resolve(host), signal))];
      } catch (e) {
        if (signal.aborted) throw e;
        throw new FetchFailure("TypeError", `${what} failed: ${host} could not be resolved (${describe(e)})`);
      }
    }
    const d = checkAddresses(url, addresses, this.rules, this.deny);
    if (!d.ok) throw attempt.deny(new FetchFailure("TypeError", `${what} refused: ${d.reason}`), d.reason);
    attempt.allow(d.reason, addresses[0]!);
    return addresses;
  }

  /**
   * Send one hop over a connection of its own to one of `addresses`; resolves with the response
   * head. The secrets `url` may receive go into header values and the query string here, and only
   * here: nothing else holds the request as sent.
   */
  private send(guestUrl: URL, method: string, headers: Headers, payload: Buffer | undefined, addresses: string[], signal: AbortSignal, attempt: Attempt): Promise<http.IncomingMessage> {
    const pairs: [string, string][] = [];
    headers.forEach((v, k) => pairs.push([k, v]));
    const sent = this.secrets.substitute(pairs, guestUrl);
    const url = sent.url;
    const host = bare(url.hostname);
    const h: Record<string, string> = {};
    for (const [k, v] of sent.headers) h[k] = v;
    // fetch's defaults, unless the guest set its own.
    h["accept"] ??= "*/*";
    h["user-agent"] ??= "node";
    h["accept-encoding"] ??= "gzip, deflate, br";
    if (payload) h["content-length"] = String(payload.length);
    else if (method === "POST" || method === "PUT") h["content-length"] = "0";
    attempt.bytesSent = payload?.length ?? 0;
    const options: https.RequestOptions = {
      host,
      port: schemeAndPort(url).port,
      path: `${url.pathname}${url.search}`,
      method,
      headers: h,
      signal,
      lookup: pinnedLookup(host, addresses),
      // A fresh agent per hop: no connection (or TLS session) outlives it or serves another request.
      ...(this.createConnection ? { createConnection: this.createConnection } : { agent: false }),
    };
    return new Promise((resolve, reject) => {
      const req = (url.protocol === "https:" ? https : http).request(options, resolve);
      req.on("error", reject);
      // Which of the checked addresses took the connection (net may try several).
      req.on("socket", (s) =>
        s.once("connect", () => {
          if (s.remoteAddress && addresses.includes(s.remoteAddress)) attempt.address = s.remoteAddress;
        }),
      );
      req.end(payload);
    });
  }

  private slot(gen: number): Promise<void> {
    if (this.active < this.grant.maxConcurrent) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) =>
      this.waiting.push(() => {
        if (gen !== this.generation) return reject(new FetchFailure("TypeError", "fetch: the run ended"));
        this.active++;
        resolve();
      }),
    );
  }

  private release(gen: number): void {
    if (gen !== this.generation) return;
    this.active--;
    this.waiting.shift()?.();
  }
}

/**
 * A `lookup` for net.connect that answers only with `addresses`, the ones checked for `host`, and
 * never asks DNS: the connection goes where the check looked, whatever the name resolves to by then.
 */
export function pinnedLookup(host: string, addresses: readonly string[]): net.LookupFunction {
  return (hostname, options, callback) => {
    const f = options.family;
    const family = f === 4 || f === "IPv4" ? 4 : f === 6 || f === "IPv6" ? 6 : 0;
    const list = hostname === host ? addresses.filter((a) => family === 0 || net.isIP(a) === family) : [];
    process.nextTick(() => {
      if (list.length === 0) {
        const err = Object.assign(new Error(`${hostname}: no checked address${family ? ` of IPv${family}` : ""}`), { code: "ENOTFOUND", hostname });
        return callback(err, options.all ? [] : "", 0);
      }
      if (options.all) callback(null, list.map((address) => ({ address, family: net.isIP(address) })));
      else callback(null, list[0]!, net.isIP(list[0]!));
    });
  };
}

/** A URL's hostname without IPv6 brackets. */
function bare(hostname: string): string {
  return hostname.startsWith("[") ? hostname.slice(1, -1) : hostname;
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function fail(m: FetchRequest, error: Failure, secrets: SecretSet): FetchResult {
  return { type: "fetchResult", id: m.id, req: m.req, ok: false, error: { ...error, message: secrets.scrub(error.message).slice(0, 4096) } };
}

function describe(e: unknown): string {
  const err = e as Error & { code?: string; cause?: { code?: string; message?: string } };
  return err?.code ?? err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}

/** The decoders for a Content-Encoding, outermost last; none when a coding is unknown (the body as it came, as fetch does). */
function decodersFor(value: string | undefined): Transform[] {
  const codings = (value ?? "").toLowerCase().split(",").map((s) => s.trim()).filter(Boolean).reverse();
  if (!codings.every((c) => c === "gzip" || c === "x-gzip" || c === "deflate" || c === "br")) return [];
  return codings.map((c) => (c === "br" ? zlib.createBrotliDecompress(BROTLI_LENIENT) : c === "deflate" ? zlib.createInflate(ZLIB_LENIENT) : zlib.createGunzip(ZLIB_LENIENT)));
}

/**
 * The body, decoded as fetch would, or a RangeError once it passes `max` bytes, on the wire or
 * decoded (the download is aborted there). Wire bytes are counted on `attempt`.
 */
async function readBody(res: http.IncomingMessage, method: string, max: number, host: string, attempt: Attempt): Promise<Buffer> {
  const tooBig = () => new FetchFailure("RangeError", `fetch: the response from ${host} is larger than network.maxResponseBytes (${max} bytes)`);
  const declared = Number(res.headers["content-length"]);
  if (Number.isFinite(declared) && declared > max) {
    res.destroy();
    throw tooBig();
  }
  const chunks: Buffer[] = [];
  let total = 0;
  const wire = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      attempt.bytesReceived += chunk.length;
      if (attempt.bytesReceived > max) return cb(tooBig());
      cb(null, chunk);
    },
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      if (total > max) return cb(tooBig());
      chunks.push(chunk);
      cb();
    },
  });
  const decoders = method === "HEAD" || NULL_BODY.has(res.statusCode ?? 0) ? [] : decodersFor(res.headers["content-encoding"]);
  try {
    await pipeline([res, wire, ...decoders, sink]);
  } catch (e) {
    if (e instanceof FetchFailure) throw e;
    const code = (e as { code?: string }).code ?? "";
    if (decoders.length > 0 && /^(Z_|ERR_BROTLI|ERR__ERROR)/.test(code)) {
      throw new FetchFailure("TypeError", `fetch: the response from ${host} could not be decoded (content-encoding ${res.headers["content-encoding"]}: ${code})`);
    }
    throw e;
  }
  return Buffer.concat(chunks);
}
