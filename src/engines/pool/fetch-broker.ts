// The host half of a sandbox's network grant: the worker (which has no network at all) asks for a
// request; this checks the URL against the grant, performs it with Node's fetch under the grant's
// caps (body sizes, per-request timeout within the run's deadline, requests in flight), follows
// redirects itself so every hop is checked, and answers with status, headers and body. Refusals
// and failures are answers too (a guest TypeError/RangeError), never host errors.
import { checkUrl, parseAllowList, type AllowRule, type NetworkGrant } from "../../policy/network.js";
import type { FetchResult, WorkerMessage } from "../../protocol/messages.js";

type FetchRequest = Extract<WorkerMessage, { type: "fetch" }>;
type Failure = Extract<FetchResult, { ok: false }>["error"];

/** Headers a guest may not set: connection management, and Host (the URL decides where it goes). */
const DROPPED_HEADERS = new Set(["host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length", "expect"]);
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Requests queued or in flight per sandbox; more are refused at once. */
const MAX_QUEUED = 64;
const MAX_RESPONSE_HEADERS = 256;

class FetchFailure extends Error {
  constructor(
    readonly kind: "TypeError" | "RangeError",
    message: string,
  ) {
    super(message);
  }
}

export class FetchBroker {
  private readonly rules: AllowRule[];
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly controllers = new Set<AbortController>();
  /** Bumped when a run ends: answers for requests of earlier runs are dropped. */
  private generation = 0;

  constructor(private readonly grant: NetworkGrant) {
    this.rules = parseAllowList(grant.allow);
  }

  /** Handle one request of the run in progress; `reply` is called once, unless the run ended first. */
  handle(m: FetchRequest, deadline: number, reply: (r: FetchResult) => void): void {
    const gen = this.generation;
    const answer = (r: FetchResult) => {
      if (gen === this.generation) reply(r);
    };
    if (this.active + this.waiting.length >= MAX_QUEUED) {
      return answer(fail(m, { name: "RangeError", message: `fetch: more than ${MAX_QUEUED} requests queued or in flight` }));
    }
    this.perform(m, deadline, gen).then(
      (ok) => answer(ok),
      (e: unknown) => answer(fail(m, e instanceof FetchFailure ? { name: e.kind, message: e.message } : { name: "TypeError", message: `fetch failed: ${describe(e)}` })),
    );
  }

  /** The run ended: abort what is in flight and forget what is queued. */
  endRun(): void {
    this.generation++;
    for (const c of this.controllers) c.abort();
    this.controllers.clear();
    this.waiting.length = 0;
    this.active = 0;
  }

  private async perform(m: FetchRequest, deadline: number, gen: number): Promise<FetchResult> {
    const g = this.grant;
    let body: Buffer | undefined = m.body !== undefined ? Buffer.from(m.body, "base64") : undefined;
    if (body && body.length > g.maxRequestBytes) {
      throw new FetchFailure("RangeError", `fetch: the request body of ${body.length} bytes is larger than network.maxRequestBytes (${g.maxRequestBytes})`);
    }
    let url = this.allowed(m.url, "fetch");
    await this.slot(gen);
    const controller = new AbortController();
    this.controllers.add(controller);
    const budget = Math.min(g.timeoutMs, Math.max(0, deadline - Date.now()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, budget);
    const headers = new Headers();
    for (const [k, v] of m.headers) {
      try {
        if (!DROPPED_HEADERS.has(k.toLowerCase())) headers.append(k, v);
      } catch {
        throw new FetchFailure("TypeError", `fetch: invalid header ${JSON.stringify(k.slice(0, 64))}`);
      }
    }
    let method = m.method;
    try {
      for (let hop = 0; ; hop++) {
        const res = await fetch(url, { method, headers, body: body && method !== "GET" && method !== "HEAD" ? body : undefined, redirect: "manual", signal: controller.signal });
        const location = res.headers.get("location");
        if (REDIRECTS.has(res.status) && location !== null && g.maxRedirects > 0) {
          await res.body?.cancel();
          if (hop >= g.maxRedirects) throw new FetchFailure("TypeError", `fetch: more than ${g.maxRedirects} redirects (network.maxRedirects)`);
          let next: string;
          try {
            next = new URL(location, url).href;
          } catch {
            throw new FetchFailure("TypeError", `fetch: ${url.host} redirected to an invalid URL`);
          }
          url = this.allowed(next, `redirect from ${url.host}`);
          if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
            method = method === "HEAD" ? "HEAD" : "GET";
            body = undefined;
            headers.delete("content-type");
          }
          continue;
        }
        const data = await readCapped(res, g.maxResponseBytes, url.host, controller);
        const out: [string, string][] = [];
        res.headers.forEach((v, k) => {
          if (out.length < MAX_RESPONSE_HEADERS) out.push([k, v]);
        });
        return { type: "fetchResult", id: m.id, req: m.req, ok: true, status: res.status, statusText: res.statusText, url: url.href, redirected: hop > 0, headers: out, body: data.toString("base64") };
      }
    } catch (e) {
      if (timedOut) throw new FetchFailure("TypeError", `fetch to ${url.host} timed out after ${budget} ms (network.timeoutMs ${g.timeoutMs}, or the run's own time limit)`);
      throw e;
    } finally {
      clearTimeout(timer);
      this.controllers.delete(controller);
      this.release(gen);
    }
  }

  private allowed(raw: string, what: string): URL {
    const r = checkUrl(raw, this.rules);
    if (!r.ok) throw new FetchFailure("TypeError", `${what} refused: ${r.message}; allowed: ${this.grant.allow.join(", ")}`);
    return r.url;
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

function fail(m: FetchRequest, error: Failure): FetchResult {
  return { type: "fetchResult", id: m.id, req: m.req, ok: false, error: { name: error.name, message: error.message.slice(0, 4096) } };
}

function describe(e: unknown): string {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  return err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e);
}

/** The body, or a RangeError once it passes `max` bytes (the download is aborted there). */
async function readCapped(res: Response, max: number, host: string, controller: AbortController): Promise<Buffer> {
  const tooBig = () => new FetchFailure("RangeError", `fetch: the response from ${host} is larger than network.maxResponseBytes (${max} bytes)`);
  const declared = Number(res.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > max) {
    controller.abort();
    throw tooBig();
  }
  if (!res.body) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      controller.abort();
      throw tooBig();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
