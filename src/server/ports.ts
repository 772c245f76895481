// The HTTP API's reverse proxy to servers in heavy-tier sandboxes: `/sandboxes/{id}/ports/{port}/…`
// goes to 127.0.0.1:{port} inside the sandbox, over a stream on its agent channel
// (sb.ports.connect). Plain requests go through Node's HTTP client on that stream, their response
// streamed back; WebSocket (and other) upgrades arrive on the Node server's 'upgrade' event, are
// authenticated as every route is, and then carry raw bytes both ways. Only ports the caller
// exposed (POST /sandboxes/{id}/ports) are proxied; our Authorization header never reaches the guest.
import http from "node:http";
import type { Duplex } from "node:stream";
import { Readable } from "node:stream";
import { InvalidOptionsError } from "../index.js";
import { HttpError, notFound, toHttp } from "./http-errors.js";
import { bearerToken, type KeyRing } from "./keys.js";
import type { Entry, SandboxRegistry } from "./registry.js";

/** Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded; plus the credentials meant for us. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "authorization", "host"]);

/** The exposed ports of each sandbox, and the proxied connections to each (cut when it is closed). */
export class ExposedPorts {
  private readonly byEntry = new WeakMap<Entry, Map<number, Set<Duplex>>>();

  expose(entry: Entry, port: number): void {
    let m = this.byEntry.get(entry);
    if (!m) this.byEntry.set(entry, (m = new Map()));
    if (!m.has(port)) m.set(port, new Set());
  }

  list(entry: Entry): number[] {
    return [...(this.byEntry.get(entry)?.keys() ?? [])].sort((a, b) => a - b);
  }

  /** Stop proxying `port`: open connections to it are cut. Idempotent. */
  close(entry: Entry, port: number): void {
    const conns = this.byEntry.get(entry)?.get(port);
    this.byEntry.get(entry)?.delete(port);
    for (const s of conns ?? []) s.destroy();
  }

  /**
   * A connection to exposed `port` of the sandbox, tracked until it closes; the sandbox counts
   * as busy (no idle expiry) while it is open. 404 for a port not exposed, 502 (PortConnectError)
   * when nothing listens there.
   */
  async connect(registry: SandboxRegistry, entry: Entry, port: number): Promise<Duplex> {
    const conns = this.byEntry.get(entry)?.get(port);
    if (!conns) throw notFound(`port ${port} of sandbox ${entry.id} is not exposed; expose it with POST /sandboxes/${entry.id}/ports {"port": ${port}}`);
    const stream = await entry.sandbox.ports.connect(port);
    conns.add(stream);
    const closed = new Promise<void>((resolve) => stream.once("close", () => resolve()));
    void registry.use(entry, () => closed).catch(() => undefined);
    void closed.then(() => conns.delete(stream));
    return stream;
  }
}

/** `{port}` of a proxy path: 1–65535, else 400 naming it. */
export function parsePort(s: string | undefined): number {
  const n = Number(s);
  if (!/^\d{1,5}$/.test(s ?? "") || n < 1 || n > 65535) throw new InvalidOptionsError([{ path: "port", message: `must be an integer from 1 to 65535, got ${JSON.stringify(s)}` }]);
  return n;
}

/** The request's headers for the guest app: hop-by-hop and our Authorization dropped, forwarding headers added. */
function forwardHeaders(raw: [string, string][], connectionTokens: string, port: number, prefix: string, host: string | undefined, proto: string): [string, string][] {
  const named = new Set(connectionTokens.split(",").map((t) => t.trim().toLowerCase()).filter(Boolean));
  const out = raw.filter(([k]) => !HOP_BY_HOP.has(k.toLowerCase()) && !named.has(k.toLowerCase()) && !k.toLowerCase().startsWith("x-forwarded-"));
  out.push(["host", `127.0.0.1:${port}`], ["x-forwarded-proto", proto], ["x-forwarded-prefix", prefix]);
  if (host) out.push(["x-forwarded-host", host]);
  return out;
}

/**
 * Proxy one request to the guest's `port`: `rest` (the path after /ports/{port}, with the query)
 * goes to the guest app. The answer is streamed back; a client that hangs up cuts the stream.
 */
export async function proxyRequest(ports: ExposedPorts, registry: SandboxRegistry, entry: Entry, port: number, rest: string, req: Request): Promise<Response> {
  const stream = await ports.connect(registry, entry, port);
  const url = new URL(req.url);
  const raw: [string, string][] = [];
  req.headers.forEach((v, k) => raw.push([k, v]));
  const headers = forwardHeaders(raw, req.headers.get("connection") ?? "", port, `/sandboxes/${entry.id}/ports/${port}`, req.headers.get("host") ?? undefined, url.protocol.replace(":", ""));
  const onAbort = () => stream.destroy();
  req.signal.addEventListener("abort", onAbort, { once: true });
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const out = http.request({ method: req.method, path: rest, headers: headers.flat(), createConnection: () => stream as never }, resolve);
    out.on("error", (e) => reject(new HttpError(502, "BAD_GATEWAY", `the server on port ${port} in the sandbox closed the connection without an answer (${e.message})`)));
    if (req.body && req.method !== "GET" && req.method !== "HEAD") Readable.fromWeb(req.body as never).on("error", (e) => out.destroy(e)).pipe(out);
    else out.end();
  }).catch((e: unknown) => {
    stream.destroy();
    req.signal.removeEventListener("abort", onAbort);
    throw e;
  });
  res.once("close", () => req.signal.removeEventListener("abort", onAbort));
  const back = new Headers();
  const conn = String(res.headers.connection ?? "");
  const named = new Set(conn.split(",").map((t) => t.trim().toLowerCase()));
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    const k = res.rawHeaders[i]!.toLowerCase();
    if (!HOP_BY_HOP.has(k) && !named.has(k)) back.append(k, res.rawHeaders[i + 1]!);
  }
  const empty = req.method === "HEAD" || res.statusCode === 204 || res.statusCode === 304;
  if (empty) res.resume();
  return new Response(empty ? null : (Readable.toWeb(res) as ReadableStream), { status: res.statusCode ?? 502, statusText: res.statusMessage ?? "", headers: back });
}

export interface UpgradeOptions {
  keys: KeyRing;
  registry: SandboxRegistry;
  ports: ExposedPorts;
}

const PROXY_PATH = /^\/sandboxes\/([^/?#]+)\/ports\/([^/?#]+)(\/[^?#]*)?(\?[^#]*)?$/;

/**
 * The Node server's 'upgrade' handler: a WebSocket (or other upgrade) to a proxied port. Checked
 * as the routes check (API key, the key's own sandbox: another key's is a 404, an exposed port);
 * then the request line and headers (path rewritten, our Authorization dropped) and what followed
 * them go to the guest, and raw bytes flow both ways until either side closes.
 */
export function upgradeHandler(o: UpgradeOptions): (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void {
  return (req, socket, head) => {
    socket.on("error", () => socket.destroy());
    void (async () => {
      const m = PROXY_PATH.exec(req.url ?? "");
      if (!m) throw notFound(`no upgrade route ${req.method} ${(req.url ?? "").split("?")[0]}`);
      const who = o.keys.authenticate(bearerToken(req.headers.authorization));
      if (!who) throw new HttpError(401, "UNAUTHORIZED", req.headers.authorization === undefined ? "missing Authorization: Bearer <API key>" : "unknown API key (or not a Bearer token)", {}, { "www-authenticate": "Bearer" });
      const id = decodeURIComponent(m[1]!);
      const entry = o.registry.get(who.name, id);
      if (!entry) throw notFound(`no sandbox ${JSON.stringify(id)} for this API key`);
      await o.registry.resume(entry); // a WebSocket to a paused sandbox brings it back, as any request does
      if (entry.sandbox.closed) throw new HttpError(410, "SANDBOX_CLOSED", `sandbox ${id} is closed; delete it and create a new one`);
      const port = parsePort(m[2]);
      const stream = await o.ports.connect(o.registry, entry, port);
      if (socket.destroyed) return void stream.destroy();
      const pairs: [string, string][] = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
      // The upgrade itself (Connection, Upgrade) is end to end here: the guest must see it.
      const kept = forwardHeaders(pairs, "", port, `/sandboxes/${id}/ports/${port}`, req.headers.host, "http");
      kept.push(["connection", "Upgrade"]);
      if (req.headers.upgrade !== undefined) kept.push(["upgrade", req.headers.upgrade]);
      const lines = [`${req.method} ${(m[3] ?? "/") + (m[4] ?? "")} HTTP/1.1`, ...kept.filter(([k, v]) => !/[\r\n]/.test(k + v)).map(([k, v]) => `${k}: ${v}`)];
      stream.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length > 0) stream.write(head);
      const cut = () => {
        socket.destroy();
        stream.destroy();
      };
      stream.on("error", cut);
      stream.on("close", () => socket.end());
      socket.on("close", () => stream.destroy());
      socket.pipe(stream);
      stream.pipe(socket);
    })().catch((e: unknown) => {
      const { status, body, headers } = toHttp(e);
      const text = JSON.stringify(body);
      const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n${extra}connection: close\r\n\r\n${text}`);
    });
  };
}
