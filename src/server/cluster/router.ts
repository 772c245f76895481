// Any node answers any request: a request that names a sandbox or snapshot another node holds is
// forwarded to that node as it came (method, path, headers, body streamed both ways, so SSE,
// NDJSON and Connect streams keep flowing, and a client that hangs up cancels the forwarded
// request); a create goes to the node with the most room for its tier; lists are gathered from
// every live node. The receiving node checks the caller's key first (keys are the same on every
// node), so another key's sandbox is the same 404 here as on its own node, and the owning node
// checks it again. A sandbox whose node has left the cluster (its lease ended) answers 410, never
// a hang; a paused one on the shared state directory is taken over by this node instead.
// A request that arrives forwarded (x-agentbox-forwarded) is always served locally: no loops.
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { readCappedBody } from "../body.js";
import { HttpError, toHttp } from "../http-errors.js";
import { bearerToken, e2bApiKey, type KeyRing, type Principal } from "../keys.js";
import { storeUnavailable, type ClusterStore, type NodeInfo, type SandboxRecord } from "./store.js";

export const FORWARDED = "x-agentbox-forwarded";

/** What a request names, by its method and path (and, for E2B's in-sandbox traffic, a header). */
export type Route =
  | { kind: "local" }
  | { kind: "sandbox"; id: string; auth: Auth }
  | { kind: "snapshot"; id: string; auth: Auth }
  | { kind: "create"; api: "native" | "e2b" }
  | { kind: "list"; what: "sandboxes" | "e2b-sandboxes" | "e2b-snapshots" }
  | { kind: "snapshots" }
  | { kind: "signed-files" };

/** How the caller is known: the native API's Bearer key, the E2B control plane's X-API-KEY, or (E2B in-sandbox traffic) the sandbox's own token, which only its node can check. */
type Auth = "bearer" | "e2b" | "token";

const SANDBOX = /^sb_[0-9a-f]{24}$/;
const SNAPSHOT = /^snap_[0-9a-f]{24}$/;

export function classify(method: string, pathname: string, header: (name: string) => string | undefined, search = ""): Route {
  // E2B's signed file URLs name no sandbox (only its token can check the signature): asked of each node.
  if (pathname === "/files" && (method === "GET" || method === "POST") && new URLSearchParams(search).has("signature")) return { kind: "signed-files" };
  const seg = pathname.split("/").slice(1);
  const id = (s: string | undefined, re: RegExp) => {
    try {
      const v = decodeURIComponent(s ?? "");
      return re.test(v) ? v : undefined;
    } catch {
      return undefined;
    }
  };
  if (seg[0] === "sandboxes") {
    if (seg.length === 1) return method === "POST" ? { kind: "create", api: "native" } : method === "GET" ? { kind: "list", what: "sandboxes" } : { kind: "local" };
    const sid = id(seg[1], SANDBOX);
    return sid ? { kind: "sandbox", id: sid, auth: "bearer" } : { kind: "local" };
  }
  if (seg[0] === "snapshots") {
    if (seg.length === 1) return method === "GET" ? { kind: "snapshots" } : { kind: "local" };
    const snap = id(seg[1], SNAPSHOT);
    return snap ? { kind: "snapshot", id: snap, auth: "bearer" } : { kind: "local" };
  }
  if (seg[0] !== "e2b") return { kind: "local" };
  if (seg[1] === "sandbox") {
    const sid = id(header("e2b-sandbox-id"), SANDBOX);
    return sid ? { kind: "sandbox", id: sid, auth: "token" } : { kind: "local" };
  }
  const rest = seg[1] === "v2" ? seg.slice(2) : seg.slice(1);
  if (rest[0] === "sandboxes") {
    if (rest.length === 1) return method === "POST" ? { kind: "create", api: "e2b" } : method === "GET" ? { kind: "list", what: "e2b-sandboxes" } : { kind: "local" };
    const sid = id(rest[1], SANDBOX);
    return sid ? { kind: "sandbox", id: sid, auth: "e2b" } : { kind: "local" };
  }
  if (rest[0] === "snapshots" && rest.length === 1 && method === "GET") return { kind: "list", what: "e2b-snapshots" };
  if (rest[0] === "templates" && rest.length === 2 && method === "DELETE") {
    const snap = id(rest[1], SNAPSHOT);
    return snap ? { kind: "snapshot", id: snap, auth: "e2b" } : { kind: "local" };
  }
  return { kind: "local" };
}

export interface RouterOptions {
  store: ClusterStore;
  keys: KeyRing;
  /** This node's own app, for a request it serves (the request untouched). */
  local: (req: IncomingMessage, res: ServerResponse) => void;
  /** This node's own app, for a request whose body the router has read (a create it placed here). */
  localFetch: (req: Request) => Promise<Response>;
  /** Whether this node holds the sandbox / snapshot now. */
  /** Whether this node holds the sandbox now: "running", "paused", or false. */
  hasSandbox: (id: string) => "running" | "paused" | false;
  /** Drop a paused sandbox this node holds but the catalog gave to another node (taken over while this node was cut off from etcd): forgotten, its saved state left to the new holder. */
  forgetSandbox: (id: string) => void;
  hasSnapshot: (id: string) => boolean;
  /** Take over a paused sandbox / a snapshot from the shared state directory (the catalog gave it to this node): whether it is here now. */
  adoptSandbox: (id: string) => Promise<boolean>;
  adoptSnapshot: (id: string) => Promise<boolean>;
  /** This node's live counts (what it publishes each second). */
  localLoad: () => { sandboxes: number; heavy: number; queued: number };
  /** Whether a create body asks for a tier that needs a heavy slot (heavy, auto; E2B: a heavy template). */
  needsHeavy: (api: "native" | "e2b", body: unknown) => boolean;
  /** A snapshot id an E2B create names as its template (it must run where the snapshot is). */
  e2bSnapshotTemplate: (body: unknown) => string | undefined;
  maxJsonBytes: number;
  maxUploadBytes: number;
  log: (line: string) => void;
}

/** What the router asks of this node's own server: what it holds, and taking over what the catalog gives it. */
export type LocalHoldings = Pick<RouterOptions, "hasSandbox" | "forgetSandbox" | "localLoad" | "hasSnapshot" | "adoptSandbox" | "adoptSnapshot">;

/** How long a sandbox's node, once looked up, is used without asking again (dropped sooner on a failure, 404 or 410). */
const TARGET_TTL_MS = 1000;
/** Most sandbox targets / key checks remembered (the oldest goes first). */
const MEMO_MAX = 1024;
/** A request body up to this size (with its Content-Length) is read before forwarding and sent in one write (and again, should the node have just left). */
const SMALL_BODY = 64 * 1024;

export class ClusterRouter {
  /** Node-to-node connections, kept open between requests. */
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 1000 });
  /** Creates sent to each node and not answered yet: counted against its room until its next publish. */
  private readonly placing = new Map<string, number>();
  /** Sandbox id → the node that served it lately and its owner: skips the catalog walk for a run after a run. */
  private readonly targets = new Map<string, { node: string; owner: string; until: number }>();
  /** Presented key → its principal (or none): the keys never change while the server runs, so one hash per distinct key. */
  private readonly principals = new Map<string, Principal | null>();

  constructor(private readonly o: RouterOptions) {
    // A node that left takes its cached targets with it.
    o.store.onNodeLeft((left) => {
      for (const [id, t] of this.targets) if (t.node === left) this.targets.delete(id);
    });
  }

  /** The HTTP server's request handler. */
  handle(req: IncomingMessage, res: ServerResponse): void {
    this.route(req, res).catch((e: unknown) => this.fail(req, res, e));
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://node");
    const route = classify(req.method ?? "GET", url.pathname, (h) => header(req, h), url.search);
    if (req.headers[FORWARDED] !== undefined) {
      // Forwarded here: served here, never forwarded again. One exception: a paused sandbox this
      // node no longer owns (a request that waited in this node's socket while it was stopped).
      if (route.kind === "sandbox" && this.o.hasSandbox(route.id) === "paused" && !(await this.stillMine(route.id))) {
        throw new HttpError(503, "NODE_UNREACHABLE", `sandbox ${route.id} has moved to another node; retry`, {}, { "retry-after": "1" });
      }
      return this.o.local(req, res);
    }
    switch (route.kind) {
      case "signed-files":
        return this.signedFiles(req, res);
      case "local":
        return this.o.local(req, res);
      case "sandbox":
        return this.toSandbox(req, res, route.id, route.auth);
      case "snapshot":
        return this.toSnapshot(req, res, route.id, route.auth);
      case "create":
        return this.create(req, res, route.api);
      case "list":
        return this.gather(req, res, route.what);
      case "snapshots":
        return this.listSnapshots(req, res);
    }
  }

  /** Where the sandbox `id` is served: here, forwarded to its node, taken over from a dead node, or 410. */
  private async toSandbox(req: IncomingMessage, res: ServerResponse, id: string, auth: Auth, body?: Uint8Array): Promise<void> {
    const cached = this.cachedTarget(req, id, auth);
    const target = cached ?? (await this.sandboxTarget(req, id, auth));
    if (target === "local") return this.o.local(req, res);
    if ("gone" in target) {
      // Deleting a sandbox that went with its node clears its record: the caller's cleanup succeeds.
      if (req.method === "DELETE" && auth !== "token" && new URL(req.url ?? "/", "http://node").pathname.replace(/\/$/, "").endsWith(id)) {
        await this.read(() => this.o.store.removed(target.gone), "delete the sandbox's record");
        req.resume();
        res.writeHead(204).end();
        return;
      }
      throw gone("sandbox", id, target.gone.node);
    }
    if (auth !== "token") {
      const owner = this.caller(req, auth)?.name;
      if (owner) this.remember(this.targets, id, { node: target.id, owner, until: Date.now() + TARGET_TTL_MS });
    }
    // A small body is read here: sent in one write, and again should the node turn out to have left.
    if (body === undefined && hasSmallBody(req)) body = await readSmallBody(req);
    const forgetTarget = () => void this.targets.delete(id);
    const again = () => {
      forgetTarget();
      return this.toSandbox(req, res, id, auth, body);
    };
    return this.forwardOr(req, res, target, again, body, forgetTarget);
  }

  /**
   * The node that served sandbox `id` lately, when it is surely still the answer: not held here
   * now, the same caller (by key) as then, its node still live, looked up under a second ago.
   * Anything else (or in-sandbox token traffic, which only the node can check): undefined.
   */
  private cachedTarget(req: IncomingMessage, id: string, auth: Auth): NodeInfo | undefined {
    if (auth === "token") return undefined;
    const t = this.targets.get(id);
    if (!t) return undefined;
    const node = t.until > Date.now() && this.o.hasSandbox(id) === false ? this.o.store.node(t.node) : undefined;
    if (!node) {
      this.targets.delete(id);
      return undefined;
    }
    return this.caller(req, auth)?.name === t.owner ? node : undefined;
  }

  /** Put `value` under `key` in a bounded map: the oldest entry goes when it is full. */
  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    if (map.size >= MEMO_MAX) map.delete(map.keys().next().value!);
    map.set(key, value);
  }

  /**
   * Before a paused sandbox held here is resumed: is it still this node's? Another node takes a
   * paused sandbox over when this one loses its lease (stopped, or cut off from etcd long enough).
   * Not: its copy here is forgotten (the other node's now). etcd unreachable: surely this node's
   * while its lease is fresh by its own clock; past that, 503.
   */
  private async stillMine(id: string): Promise<boolean> {
    const now = await this.o.store.freshRecord(id).catch(() => "unknown" as const);
    if (now === "unknown") {
      if (this.o.store.leaseFresh()) return true;
      throw new HttpError(503, "CLUSTER_UNAVAILABLE", `sandbox ${id} is paused on this node, but this node cannot reach etcd and may have lost its lease (another node may have taken the sandbox over); retry later`, {}, { "retry-after": "2" });
    }
    if (!now || now.node === this.o.store.nodeId) return true;
    this.o.log(`cluster: paused sandbox ${id} was taken over by node ${now.node} while this node was cut off; forgetting it here`);
    this.o.forgetSandbox(id);
    return false;
  }

  /** Here, the node to forward to, or (its node left the cluster, nothing to take over) the record of a sandbox gone with its node. */
  private async sandboxTarget(req: IncomingMessage, id: string, auth: Auth): Promise<NodeInfo | "local" | { gone: SandboxRecord }> {
    const here = this.o.hasSandbox(id);
    if (here === "running") return "local";
    if (here === "paused" && (await this.stillMine(id))) return "local";
    const who = auth === "token" ? undefined : this.caller(req, auth);
    // A caller without a good key gets this node's own 401 (in its API's format).
    if (auth !== "token" && !who) return "local";
    const record = await this.read(() => this.o.store.record(id), "find the sandbox's node");
    // Unknown, or another key's: this node's own 404.
    if (!record || (who && record.owner !== who.name)) return "local";
    const store = this.o.store;
    if (record.node === store.nodeId) {
      // Recorded here but not loaded: paused on the shared directory before a restart.
      if (record.state === "paused" && record.persisted) await this.o.adoptSandbox(id);
      return "local";
    }
    const node = store.node(record.node);
    if (node) return node;
    if (record.state === "paused" && record.persisted) {
      const mine = await this.read(() => store.adopt(record), "take over the paused sandbox");
      if (mine && (await this.o.adoptSandbox(id))) {
        this.o.log(`cluster: took over paused sandbox ${id} from node ${record.node}, which left`);
        return "local";
      }
      // Another node took it first: ask again where it is.
      const now = await this.read(() => store.record(id), "find the sandbox's node");
      const there = now && store.node(now.node);
      if (there && now.node !== store.nodeId) return there;
    }
    return { gone: record };
  }

  private async toSnapshot(req: IncomingMessage, res: ServerResponse, id: string, auth: Auth): Promise<void> {
    const target = await this.snapshotTarget(req, id, auth);
    if (target === "local") return this.o.local(req, res);
    return this.forwardOr(req, res, target, () => this.toSnapshot(req, res, id, auth));
  }

  private async snapshotTarget(req: IncomingMessage, id: string, auth: Auth): Promise<NodeInfo | "local"> {
    if (this.o.hasSnapshot(id)) return "local";
    const who = this.caller(req, auth);
    if (!who) return "local";
    const store = this.o.store;
    const record = await this.read(() => store.snapshot(id), "find the snapshot's node");
    if (!record || record.owner !== who.name) return "local";
    const node = record.node === store.nodeId ? undefined : store.node(record.node);
    if (node) return node;
    // Its node is gone (or is this one, restarted): from the shared directory, when it was written there.
    if (record.persisted && (await this.o.adoptSnapshot(id))) return "local";
    throw gone("snapshot", id, record.node);
  }

  /** A create: placed on the node with the most room for its tier (this one on a tie). */
  private async create(req: IncomingMessage, res: ServerResponse, api: "native" | "e2b"): Promise<void> {
    const who = this.caller(req, api === "native" ? "bearer" : "e2b");
    if (!who) return this.o.local(req, res);
    const body = await readCappedBody(toWebRequest(req), this.o.maxJsonBytes, () => new HttpError(413, "BODY_TOO_LARGE", `request body is over the server's limit of ${this.o.maxJsonBytes} bytes`, { value: this.o.maxJsonBytes }));
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(body).toString("utf8"));
    } catch {
      parsed = undefined; // this node's own handler says what is wrong with it
    }
    const snap = api === "e2b" ? this.o.e2bSnapshotTemplate(parsed) : undefined;
    // Where the snapshot is, or the node with the most room; placed again if that node has just left.
    const placeAndSend = async (): Promise<void> => {
      const target = snap ? await this.snapshotTarget(req, snap, "e2b") : this.place(this.o.needsHeavy(api, parsed));
      if (target === "local") return this.placed(this.o.store.nodeId, async () => send(res, await this.o.localFetch(webRequest(req, body))));
      return this.placed(target.id, () => this.forwardOr(req, res, target, placeAndSend, body));
    };
    return placeAndSend();
  }

  /** `fn` with one more create counted against node `id`'s room until it ends (then its live count has it). */
  private async placed<T>(id: string, fn: () => Promise<T>): Promise<T> {
    this.placing.set(id, (this.placing.get(id) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      this.placing.set(id, Math.max(0, (this.placing.get(id) ?? 1) - 1));
    }
  }

  /** The live node with the most free slots for the tier (heavy: its heavy slots too), less the creates already sent its way. */
  private place(heavy: boolean): NodeInfo | "local" {
    const store = this.o.store;
    const nodes = store.liveNodes().filter((n) => !heavy || n.tiers.includes("heavy"));
    if (nodes.length === 0) {
      throw new HttpError(503, "CAPACITY", heavy ? "no node of the cluster serves the heavy tier now" : "no node of the cluster is live now", {}, { "retry-after": "2" });
    }
    const room = (n: NodeInfo) => {
      // This node's own counts are live; the others' as they last published them (≤ 1 s old).
      const c = n.id === store.nodeId ? { ...n, ...this.o.localLoad() } : n;
      const free = c.maxSandboxes - c.sandboxes - c.queued - (this.placing.get(n.id) ?? 0);
      return heavy ? Math.min(free, c.maxHeavy - c.heavy) : free;
    };
    let best = nodes[0]!;
    for (const n of nodes.slice(1)) {
      const d = room(n) - room(best);
      if (d > 0 || (d === 0 && n.id === store.nodeId)) best = n;
    }
    return best.id === store.nodeId ? "local" : best;
  }

  /** `GET /sandboxes` (and E2B's lists): every live node's answer for the caller, merged. */
  private async gather(req: IncomingMessage, res: ServerResponse, what: "sandboxes" | "e2b-sandboxes" | "e2b-snapshots"): Promise<void> {
    const who = this.caller(req, what === "sandboxes" ? "bearer" : "e2b");
    if (!who) return this.o.local(req, res);
    const url = new URL(req.url ?? "/", "http://node");
    // E2B's pages are cut here, from every node's whole list.
    const limit = Math.min(Math.max(Number(url.searchParams.get("limit") ?? 100) || 100, 1), 1000);
    const from = Number(url.searchParams.get("nextToken") ?? 0) || 0;
    url.searchParams.delete("limit");
    url.searchParams.delete("nextToken");
    const path = url.pathname + url.search;
    const answers = await Promise.all(
      this.o.store.liveNodes().map(async (n) => {
        try {
          const r = n.id === this.o.store.nodeId ? await this.o.localFetch(webRequest(req, undefined, path)) : await this.fetchFrom(n, req, path);
          if (r.status !== 200) return { status: r.status, body: await r.text() };
          return { status: 200, rows: (await r.json()) as unknown };
        } catch {
          return undefined; // a node that cannot answer now: left out of the list
        }
      }),
    );
    const failed = answers.find((a) => a && a.status !== 200);
    if (failed && "body" in failed) return send(res, new Response(failed.body, { status: failed.status, headers: { "content-type": "application/json" } }));
    if (what === "sandboxes") {
      const rows = answers.flatMap((a) => ((a?.rows as { sandboxes?: { createdAt: string; id: string }[] } | undefined)?.sandboxes ?? []));
      rows.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || (a.id < b.id ? -1 : 1));
      return send(res, Response.json({ sandboxes: rows }));
    }
    const rows = answers.flatMap((a) => (Array.isArray(a?.rows) ? (a.rows as { startedAt?: string }[]) : []));
    if (what === "e2b-sandboxes") {
      rows.sort((a, b) => (a.startedAt ?? "").localeCompare(b.startedAt ?? ""));
      if (url.searchParams.get("order") === "desc") rows.reverse();
    }
    const page = rows.slice(from, from + limit);
    return send(res, Response.json(page, { headers: from + limit < rows.length ? { "x-next-token": String(from + limit) } : {} }));
  }

  /**
   * An E2B signed `/files` URL: the signature is checked against the tokens of the sandboxes a
   * node holds, so this node tries itself, then each other live node, until one does not answer
   * 401 (the body, an upload, is read once, within the upload limit).
   */
  private async signedFiles(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body =
      req.method === "POST" ? await readCappedBody(toWebRequest(req), this.o.maxUploadBytes, () => new HttpError(413, "BODY_TOO_LARGE", `request body is over the server's limit of ${this.o.maxUploadBytes} bytes`, { value: this.o.maxUploadBytes })) : undefined;
    const here = await this.o.localFetch(webRequest(req, body));
    if (here.status !== 401) return send(res, here);
    for (const n of this.o.store.liveNodes()) {
      if (n.id === this.o.store.nodeId) continue;
      const r = await this.fetchFrom(n, req, req.url ?? "/", body).catch(() => undefined);
      if (r && r.status !== 401) return send(res, r);
      await r?.arrayBuffer();
    }
    return send(res, here);
  }

  /** `GET /snapshots`: the caller's snapshots, from the catalog (any node's, a gone node's too when on shared storage). */
  private async listSnapshots(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const who = this.caller(req, "bearer");
    if (!who) return this.o.local(req, res);
    const store = this.o.store;
    const records = await this.read(() => store.snapshotsOf(who.name), "list the snapshots");
    const rows = records
      .filter((r) => r.persisted || r.node === store.nodeId || store.node(r.node))
      .map((r) => r.info as { createdAt?: string; id?: string })
      .sort((a, b) => String(a.createdAt).localeCompare(String(b.createdAt)) || (String(a.id) < String(b.id) ? -1 : 1));
    return send(res, Response.json({ snapshots: rows }));
  }

  /**
   * The request to `node`: its body streamed (or `body`, one the router read already, in one
   * write), the answer streamed back. The body is sent once the connection is up, so a node that
   * cannot be reached at all leaves the request untouched: "unreachable", for the caller to route
   * again (the node may have just left). `stale`: called when the node says the sandbox is not
   * (or no longer) there (404, 410) or cannot be reached, so a cached lookup is dropped.
   */
  private forward(req: IncomingMessage, res: ServerResponse, node: NodeInfo, body?: Uint8Array, stale?: () => void): Promise<"done" | "unreachable"> {
    return new Promise((resolve) => {
      const target = new URL(node.url);
      const headers = rawForwardHeaders(req, this.o.store.nodeId, target.host, body);
      const out = http.request({ protocol: target.protocol, hostname: target.hostname, port: target.port, path: req.url ?? "/", method: req.method, headers, agent: this.agent });
      let sent = false;
      let connectTimer: NodeJS.Timeout | undefined;
      const start = () => {
        clearTimeout(connectTimer);
        if (sent) return;
        sent = true;
        if (body) out.end(body);
        else if (!hasBody(req)) out.end();
        else req.pipe(out);
      };
      // A node that stops answering without closing its connections (stopped, cut off) is cut
      // loose when its lease ends: the request never waits longer than the lease.
      const off = this.o.store.onNodeLeft((left) => {
        if (left === node.id) out.destroy(new Error(`node ${node.id} left the cluster while this request was in flight; retry`));
      });
      out.once("close", off);
      out.on("socket", (s) => {
        // A kept-alive socket is up already: no connect to wait for (or time).
        if (!s.connecting) return start();
        connectTimer = setTimeout(() => out.destroy(new Error("connect timeout")), 3000);
        s.once("connect", start);
      });
      out.on("response", (answer) => {
        clearTimeout(connectTimer);
        if (answer.statusCode === 404 || answer.statusCode === 410) stale?.();
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, responseHeaders(answer));
        // A stream's headers go at once (its first event may be seconds away); a sized answer's
        // go with its body, in one write.
        if (answer.headers["content-length"] === undefined) res.flushHeaders();
        answer.pipe(res);
        answer.on("end", () => resolve("done"));
        answer.on("error", () => {
          res.destroy();
          resolve("done");
        });
      });
      out.on("error", (e) => {
        clearTimeout(connectTimer);
        stale?.();
        if (!sent) return resolve("unreachable");
        // The node died under the request (or left while it was in flight): 503, retry; the retry
        // finds it gone (410), or its paused sandbox taken over.
        if (!res.headersSent) this.fail(req, res, unreachable(node, e));
        else res.destroy();
        resolve("done");
      });
      // A client that hangs up ends the forwarded request (a run is interrupted as on its own node).
      res.on("close", () => {
        if (!res.writableFinished) out.destroy();
      });
    });
  }

  /**
   * Forward to `node`; when it cannot be reached, ask the store (not the watch's view) whether it
   * still holds its lease: if not, it is forgotten and `again` routes the request anew (a drained
   * node's sandbox is then taken over at once); if so, 503 (retry).
   */
  private async forwardOr(req: IncomingMessage, res: ServerResponse, node: NodeInfo, again: () => Promise<void>, body?: Uint8Array, stale?: () => void): Promise<void> {
    if ((await this.forward(req, res, node, body, stale)) === "done") return;
    const alive = await this.read(() => this.o.store.nodeAlive(node.id), "check whether the sandbox's node is alive");
    if (!alive) return again();
    throw unreachable(node, new Error("connection refused"));
  }

  /** A WebSocket upgrade (a sandbox's exposed port): here, or piped as bytes to the sandbox's node. */
  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, local: (req: IncomingMessage, socket: Duplex, head: Buffer) => void): Promise<void> {
    try {
      if (req.headers[FORWARDED] !== undefined) return local(req, socket, head);
      const url = new URL(req.url ?? "/", "http://node");
      const route = classify(req.method ?? "GET", url.pathname, (h) => header(req, h));
      if (route.kind !== "sandbox") return local(req, socket, head);
      const target = await this.sandboxTarget(req, route.id, route.auth);
      if (target === "local") return local(req, socket, head);
      if ("gone" in target) throw gone("sandbox", route.id, target.gone.node);
      const u = new URL(target.url);
      const upstream = net.connect(Number(u.port || 80), u.hostname);
      upstream.setTimeout(3000, () => upstream.destroy());
      upstream.once("connect", () => {
        upstream.setTimeout(0);
        const headers = forwardHeaders(req, this.o.store.nodeId, true);
        const lines = [`${req.method} ${req.url} HTTP/1.1`, ...Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => `${k}: ${x}`) : v === undefined ? [] : [`${k}: ${v}`]))];
        upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
        if (head.length > 0) upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
      });
      upstream.on("error", () => socket.destroy());
      socket.on("error", () => upstream.destroy());
      socket.on("close", () => upstream.destroy());
      upstream.on("close", () => socket.destroy());
    } catch (e) {
      const { status, body } = toHttp(e);
      const text = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
    }
  }

  close(): void {
    this.agent.destroy();
  }

  /** `path` of node `n`, with the caller's headers (a GET, or `body` as a POST). */
  private fetchFrom(n: NodeInfo, req: IncomingMessage, path: string, body?: Uint8Array): Promise<Response> {
    const headers = new Headers();
    for (const [k, v] of Object.entries(forwardHeaders(req, this.o.store.nodeId))) if (typeof v === "string") headers.set(k, v);
    headers.delete("content-length");
    headers.delete("transfer-encoding");
    headers.delete("host");
    return fetch(new URL(path, n.url), { method: body ? "POST" : "GET", headers, ...(body ? { body } : {}), signal: AbortSignal.timeout(body ? 60_000 : 5000) });
  }

  /** The caller's principal by the route's way of authenticating, or undefined (their own node answers the 401). */
  private caller(req: IncomingMessage, auth: Auth): Principal | undefined {
    const authorization = header(req, "authorization");
    const token = auth === "bearer" ? bearerToken(authorization) : e2bApiKey(header(req, "x-api-key"), authorization);
    if (token === undefined || token.length > 512) return this.o.keys.authenticate(token);
    // Remembered per presented key (bounded): the SHA-256 and the walk over every key once per key, not per request.
    const known = this.principals.get(token);
    if (known !== undefined) return known ?? undefined;
    const who = this.o.keys.authenticate(token);
    this.remember(this.principals, token, who ?? null);
    return who;
  }

  /** A store read; unreachable: 503 naming what could not be done. */
  private async read<T>(op: () => Promise<T>, what: string): Promise<T> {
    try {
      return await op();
    } catch (e) {
      if (e instanceof HttpError) throw e;
      throw storeUnavailable(what, e);
    }
  }

  /** An error answer in the format of the API the request used (E2B's { code, message } under /e2b). */
  private fail(req: IncomingMessage, res: ServerResponse, e: unknown): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const { status, body, headers } = toHttp(e);
    if (!(e instanceof HttpError)) this.o.log(`cluster: ${req.method} ${req.url}: ${(e as Error)?.stack ?? String(e)}`);
    const e2b = (req.url ?? "").startsWith("/e2b");
    const payload = e2b ? { code: status, message: body.error.message } : body;
    req.resume(); // an unread body must not hold the connection
    res.writeHead(status, { ...headers, "content-type": "application/json" });
    res.end(JSON.stringify(payload));
  }
}

function unreachable(node: NodeInfo, e: Error): HttpError {
  return new HttpError(503, "NODE_UNREACHABLE", `node ${node.id} (${node.url}) does not answer: ${e.message}; if it has died, its sandboxes answer 410 once its lease ends`, { node: node.id }, { "retry-after": "2" });
}

function gone(what: "sandbox" | "snapshot", id: string, node: string): HttpError {
  return new HttpError(410, "NODE_GONE", `${what}${id ? ` ${id}` : ""} was on node ${node}, which has left the cluster (its lease ended); it is gone with its node${what === "sandbox" ? " (a sandbox paused to the shared state directory would have been taken over)" : ""}`, { node });
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"]);

function forwardHeaders(req: IncomingMessage, self: string, upgrade = false): Record<string, string | string[] | undefined> {
  const out: Record<string, string | string[] | undefined> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (!upgrade && HOP_BY_HOP.has(k) && k !== "transfer-encoding") continue;
    out[k] = v;
  }
  out[FORWARDED] = self;
  const fwd = req.socket.remoteAddress;
  if (fwd) out["x-forwarded-for"] = req.headers["x-forwarded-for"] ? `${String(req.headers["x-forwarded-for"])}, ${fwd}` : fwd;
  return out;
}

/**
 * The caller's headers as they came (raw names and order, repeated ones kept), without the
 * hop-by-hop ones, plus who forwarded it; a Host for an HTTP/1.0 caller that sent none (the node
 * is asked in HTTP/1.1). `body`: read already, so sent with its length, not chunked.
 */
function rawForwardHeaders(req: IncomingMessage, self: string, host: string, body: Uint8Array | undefined): string[] {
  const out: string[] = [];
  const raw = req.rawHeaders;
  let hasHost = false;
  let xff: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (k === "host") hasHost = true;
    else if (k === FORWARDED) continue;
    else if (k === "x-forwarded-for") {
      xff = xff === undefined ? raw[i + 1]! : `${xff}, ${raw[i + 1]!}`;
      continue;
    } else if (k === "transfer-encoding" || k === "content-length") {
      if (body) continue;
    } else if (HOP_BY_HOP.has(k)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  if (!hasHost) out.push("host", host);
  if (body) out.push("content-length", String(body.byteLength));
  out.push(FORWARDED, self);
  const from = req.socket.remoteAddress;
  if (from) out.push("x-forwarded-for", xff === undefined ? from : `${xff}, ${from}`);
  else if (xff !== undefined) out.push("x-forwarded-for", xff);
  return out;
}

/** Whether the request has a body to send on (a length over 0, or chunked). */
function hasBody(req: IncomingMessage): boolean {
  const te = req.headers["transfer-encoding"];
  if (te !== undefined) return true;
  const cl = req.headers["content-length"];
  return cl !== undefined && cl !== "0";
}

/** A body with a Content-Length of at most SMALL_BODY (1 byte or more): read whole before forwarding. */
function hasSmallBody(req: IncomingMessage): boolean {
  if (req.headers["transfer-encoding"] !== undefined) return false;
  const n = Number(req.headers["content-length"] ?? 0);
  return n > 0 && n <= SMALL_BODY;
}

/** The request's whole body (its Content-Length, at most SMALL_BODY, is enforced by Node's parser). */
function readSmallBody(req: IncomingMessage): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > SMALL_BODY) req.destroy(new Error("request body over its Content-Length"));
      else chunks.push(c);
    });
    req.once("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.once("error", reject);
    req.once("close", () => {
      if (!req.complete) reject(new Error("the caller hung up before sending its whole request body"));
    });
  });
}

function responseHeaders(answer: IncomingMessage): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(answer.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/** The request's body as a web stream, for readCappedBody. */
function toWebRequest(req: IncomingMessage): Request {
  return new Request("http://node/", {
    method: "POST",
    headers: req.headers["content-length"] ? { "content-length": String(req.headers["content-length"]) } : {},
    body: new ReadableStream({
      start(controller) {
        req.on("data", (c: Buffer) => controller.enqueue(new Uint8Array(c)));
        req.on("end", () => controller.close());
        req.on("error", (e) => controller.error(e));
      },
    }),
    duplex: "half",
  } as RequestInit);
}

/** A web Request for this node's app from the incoming one (its body read already, or none). */
function webRequest(req: IncomingMessage, body?: Uint8Array, path?: string): Request {
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || k === "content-length") continue;
    headers.set(k, Array.isArray(v) ? v.join(", ") : v);
  }
  const method = path ? "GET" : (req.method ?? "GET");
  return new Request(new URL(path ?? req.url ?? "/", `http://${header(req, "host") ?? "node"}`), { method, headers, ...(body && method !== "GET" && method !== "HEAD" ? { body } : {}) });
}

/** Write a web Response to the Node response, streaming its body. */
async function send(res: ServerResponse, r: Response): Promise<void> {
  const headers: Record<string, string> = {};
  r.headers.forEach((v, k) => {
    headers[k] = v;
  });
  res.writeHead(r.status, headers);
  if (!r.body) {
    res.end();
    return;
  }
  for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) res.write(chunk);
  res.end();
}
