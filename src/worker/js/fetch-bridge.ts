// The guest's `fetch` with a network grant: the host function that checks a request and sends it
// to the host as a `fetch` frame, the set of requests of the run in progress, and the delivery of
// the host's answers to the prelude (`fetchDone`). Every handle made for an answer is freed here.
import { Scope, type QuickJSHandle } from "quickjs-emscripten-core";
import { FETCH_LIMITS, fetchRequestProblem } from "../../protocol/caps.js";
import type { HostMessage } from "../../protocol/messages.js";
import type { GuestContext } from "./context.js";
import { words } from "./state.js";
import type { GuestValues, HostFn } from "./values.js";

type FetchResult = Extract<HostMessage, { type: "fetchResult" }>;

export class FetchBridge {
  private seq = 0;
  /** Requests of the run in progress still waiting for the host's answer. */
  private readonly pending = new Set<number>();

  constructor(private readonly send: (message: unknown) => void) {}

  get inFlight(): number {
    return this.pending.size;
  }

  /** Requests still unanswered belong to the run that ends: their answers will be dropped. */
  endRun(): void {
    this.pending.clear();
  }

  /** The `fetch` host function for a grant whose request bodies are capped at `maxRequestBytes`. */
  hostFunctions(v: GuestValues, grant: { maxRequestBytes: number } | undefined): Record<string, HostFn> {
    if (!grant) return {};
    const ctx = v.ctx;
    const cap = grant.maxRequestBytes;
    const fetch: HostFn = (url, method, headers, body) => {
      const u = v.str(url, "url");
      const m = v.str(method, "method");
      const h = JSON.parse(v.str(headers, "headers")) as unknown;
      const data = body && ctx.typeof(body) !== "undefined" ? v.bytes(body) : undefined;
      const fail = (name: string, message: string) => ctx.newError({ name, message: `fetch: ${message}` });
      const pairs: unknown[] = Array.isArray(h) ? h : [];
      const problem = fetchRequestProblem(m, u, pairs);
      if (problem) throw fail("TypeError", problem);
      if (data && data.length > cap) throw fail("RangeError", `the request body of ${data.length} bytes is larger than network.maxRequestBytes (${cap})`);
      if (this.pending.size >= FETCH_LIMITS.inFlight) throw fail("RangeError", `more than ${FETCH_LIMITS.inFlight} requests in flight`);
      const req = ++this.seq;
      this.pending.add(req);
      this.send({ type: "fetch", id: Atomics.load(words, 2), req, url: u, method: m, headers: pairs as [string, string][], ...(data ? { body: Buffer.from(data).toString("base64") } : {}) });
      return ctx.newNumber(req);
    };
    return { fetch };
  }

  /** Hand an answer to the prelude; answers for requests of an earlier run are dropped. */
  deliver(guest: GuestContext, m: FetchResult): void {
    if (!this.pending.delete(m.req)) return; // stale
    const ctx = guest.ctx;
    Scope.withScope((scope) => {
      let meta = ctx.newString(JSON.stringify(m.ok ? { status: m.status, statusText: m.statusText, url: m.url, redirected: m.redirected, headers: m.headers } : { error: m.error }));
      scope.manage(meta);
      let body: QuickJSHandle = ctx.undefined;
      if (m.ok) {
        try {
          const b = Buffer.from(m.body, "base64");
          body = scope.manage(guest.values.arrayBuffer(b));
        } catch {
          meta = scope.manage(ctx.newString(JSON.stringify({ error: { name: "RangeError", message: "fetch: the response body does not fit in the sandbox's memory (limits.memoryMb)" } })));
        }
      }
      const r = ctx.callFunction(guest.hooks.fetchDone, ctx.undefined, scope.manage(ctx.newNumber(m.req)), meta, body);
      scope.manage(r.error ?? r.value);
    });
  }
}
