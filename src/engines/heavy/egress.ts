// The host half of a heavy sandbox's network: the guest has no network interface; its agent
// listens on the guest's loopback (PROXY_PORT) and passes every connection to the host as a stream
// over the agent channel (streams.ts). Here each stream is served as an HTTP proxy by Node's own
// HTTP server (never listening on a host port; the streams are handed to it): CONNECT tunnels
// (HTTPS, and anything else a client tunnels) and absolute-form requests (plain HTTP), so curl,
// pip, apt, git, requests and urllib work unchanged through HTTP_PROXY/HTTPS_PROXY. Every
// connection is decided as the nano tier's fetch is (policy/network.ts): the target is checked
// against the grant, its name resolved on the host, every address checked, and the connection
// pinned to those addresses. Caps: connections at once, each connection's lifetime and bytes each
// way. Every attempt is recorded in the sandbox's network log. A refusal is an HTTP answer (403,
// 503) whose reason phrase and body say which rule refused it, never a host error. Redirects are
// the client's to follow: each hop comes back through here and is checked again.
// Secrets (network.secrets, policy/secrets.ts): the guest's env holds placeholders; a request to
// one of a secret's hosts gets the value in place of its placeholder in header values and the
// query, and its response comes back with the value scrubbed (headers and streamed body, sent
// uncompressed so the scrub sees it). Plain HTTP is rewritten as it passes; HTTPS to a secret's
// host is intercepted: the tunnel ends here in TLS with a certificate from the sandbox's own CA
// (tls-ca.ts; the guest trusts it through the CA bundle the agent writes), each request inside is
// handled as a plain one and sent on over a new, verified TLS connection. Tunnels to every other
// host pass untouched.
import http from "node:http";
import https from "node:https";
import net from "node:net";
import type { Duplex } from "node:stream";
import tls from "node:tls";
import { scrubbingStream, type HeaderPair, type SecretSet } from "../../policy/secrets.js";
import { createSandboxCa, type SandboxCa } from "../../policy/tls-ca.js";
import { checkAddresses, checkUrl, parseAllowList, schemeAndPort, urlForLog, type AllowRule, type NetworkGrant, type NetworkLogEntry } from "../../policy/network.js";
import { pinnedLookup, systemResolver, type Resolver } from "../pool/fetch-broker.js";
import { LoggedAttempt, NetworkLog } from "../pool/network-log.js";

/** The port the agent's proxy listens on, on the guest's loopback. */
export const PROXY_PORT = 3128;

/** Where the agent writes the CA bundle (the system's and the sandbox's CA) when secrets are intercepted. */
export const GUEST_CA_BUNDLE = "/tmp/.agentbox/ca-bundle.pem";
/** The sandbox's CA alone (for NODE_EXTRA_CA_CERTS, which adds to Node's own list). */
export const GUEST_SANDBOX_CA = "/tmp/.agentbox/sandbox-ca.pem";

/** What makes the guest's TLS clients trust the bundle: OpenSSL and Python, requests, pip, curl, git, Node. */
export function caEnv(): Record<string, string> {
  return {
    SSL_CERT_FILE: GUEST_CA_BUNDLE,
    REQUESTS_CA_BUNDLE: GUEST_CA_BUNDLE,
    PIP_CERT: GUEST_CA_BUNDLE,
    CURL_CA_BUNDLE: GUEST_CA_BUNDLE,
    GIT_SSL_CAINFO: GUEST_CA_BUNDLE,
    NODE_EXTRA_CA_CERTS: GUEST_SANDBOX_CA,
  };
}

/** What the guest's commands and REPL get so that HTTP clients use the proxy (lower and upper case). */
export function proxyEnv(): Record<string, string> {
  const url = `http://127.0.0.1:${PROXY_PORT}`;
  const env: Record<string, string> = {};
  for (const [k, v] of [
    ["http_proxy", url],
    ["https_proxy", url],
    ["all_proxy", url],
    // The guest's own servers (an app under test) are reached directly.
    ["no_proxy", "localhost,127.0.0.1,::1"],
  ] as const) {
    env[k] = v;
    env[k.toUpperCase()] = v;
  }
  return env;
}

/**
 * How the proxy verifies the servers it connects to over TLS itself (absolute-form https requests,
 * intercepted tunnels): Node's defaults unless `ca` is set. Only tests set it, to trust a test CA.
 */
export const upstreamTls: { ca: string[] | undefined } = { ca: undefined };

/** Request headers that belong to the hop to the proxy, not to the request passed on. */
const HOP_HEADERS = new Set(["connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);

export interface EgressProxyOptions {
  /** Default: the system's resolver (fetch-broker.ts systemResolver, which tests can map). */
  resolve?: Resolver;
  log?: NetworkLog;
  /** The grant's secrets; with any, HTTPS to their hosts is intercepted with a CA of this proxy's own. */
  secrets?: SecretSet | undefined;
}

class Refusal extends Error {
  constructor(
    readonly status: 403 | 502 | 503,
    message: string,
    /** What the log records as the reason (the message without the "refused:" framing). */
    readonly reason = message,
    readonly decision: "denied" | "error" = "denied",
  ) {
    super(message);
  }
}

/** One connection from its check to its close: recorded in the log exactly once. */
class Attempt extends LoggedAttempt {
  /** Why the address check let it through, once it did. */
  reason = "";
}

export class EgressProxy {
  readonly log: NetworkLog;
  private readonly rules: AllowRule[];
  private readonly deny: AllowRule[];
  private readonly resolve: Resolver;
  private readonly server: http.Server;
  /** Serves the requests inside intercepted TLS tunnels (secrets' hosts). */
  private readonly intercepted: http.Server;
  private readonly secrets: SecretSet | undefined;
  /** The sandbox's CA, made when there are secrets to intercept for. */
  readonly ca: SandboxCa | undefined;
  private active = 0;
  private readonly open = new Set<Duplex>();
  private closed = false;
  /** Upstream connections whose slot was given back. */
  private readonly released = new WeakSet<Duplex>();

  constructor(
    private readonly grant: NetworkGrant,
    options: EgressProxyOptions = {},
  ) {
    this.rules = parseAllowList(grant.allow);
    this.deny = parseAllowList(grant.deny ?? []);
    this.resolve = options.resolve ?? ((host) => systemResolver(host));
    this.log = options.log ?? new NetworkLog();
    this.secrets = options.secrets && options.secrets.size > 0 ? options.secrets : undefined;
    this.ca = this.secrets ? createSandboxCa("agentbox sandbox egress") : undefined;
    this.server = http.createServer({ requestTimeout: 0 }, (req, res) => void this.forward(req, res));
    this.intercepted = http.createServer({ requestTimeout: 0 }, (req, res) => {
      const origin = (req.socket as tls.TLSSocket & { agentboxOrigin?: string }).agentboxOrigin;
      void this.forward(req, res, origin);
    });
    this.intercepted.on("clientError", (_e, socket: Duplex) => socket.destroy());
    this.server.on("connect", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void this.tunnel(req, socket, head));
    // A plain-HTTP Upgrade (WebSocket) through the proxy is not carried: ws:// URLs get a 501.
    this.server.on("upgrade", (_req: http.IncomingMessage, socket: Duplex) => socket.end("HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"));
    this.server.on("clientError", (_e, socket: Duplex) => {
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
  }

  /** Serve one connection the guest made to the proxy. */
  accept(stream: Duplex): void {
    if (this.closed) return void stream.destroy();
    this.track(stream);
    this.server.emit("connection", stream);
  }

  /** End every connection (the sandbox is going away). */
  close(): void {
    this.closed = true;
    for (const s of this.open) s.destroy();
    this.open.clear();
  }

  /** A CONNECT tunnel: checked, then the bytes pass untouched both ways. */
  private async tunnel(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const target = req.url ?? "";
    const parsed = /^(\[[0-9a-fA-F:.]+\]|[^:/[\]@\s]+):([0-9]{1,5})$/.exec(target);
    const attempt = new Attempt(this.log, "CONNECT", { url: target.slice(0, 300), host: parsed?.[1]?.toLowerCase() ?? "", port: parsed ? Number(parsed[2]) : null });
    let upstream: net.Socket | undefined;
    try {
      if (!parsed) throw new Refusal(403, `CONNECT ${JSON.stringify(target.slice(0, 100))} is not host:port`);
      // The tunnel is opaque: allowed when an entry lets the host and port through for either scheme.
      const https_ = this.check(`https://${target}/`);
      const url = https_.ok ? https_.url : this.checkOrRefuse(`http://${target}/`, https_);
      const addresses = await this.addresses(url, attempt);
      if (this.ca && https_.ok && this.secrets!.forUrl(url).length > 0) return this.intercept(socket, head, url, attempt);
      this.slot(attempt);
      const s = net.connect({ host: bare(url.hostname), port: schemeAndPort(url).port, lookup: pinnedLookup(bare(url.hostname), addresses) });
      upstream = s;
      this.track(s);
      await new Promise<void>((resolve, reject) => {
        s.once("connect", resolve);
        s.once("error", reject);
      });
      if (s.remoteAddress) attempt.address = s.remoteAddress;
      attempt.status = 200;
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) s.write(head);
      this.splice(socket, s, attempt);
    } catch (e) {
      if (upstream) this.release(upstream);
      this.refuse(e, attempt, (status, phrase, body) => socket.end(`HTTP/1.1 ${status} ${phrase}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nX-Agentbox-Error: ${status === 403 ? "NETWORK_DENIED" : "NETWORK_ERROR"}\r\nConnection: close\r\n\r\n${body}`));
    }
  }

  /**
   * A tunnel to a secret's host: TLS ends here (a certificate for the host from the sandbox's CA)
   * and each request inside is forwarded as a plain one to `url`'s origin, with substitution.
   */
  private intercept(socket: Duplex, head: Buffer, url: URL, attempt: Attempt): void {
    attempt.status = 200;
    attempt.address = null;
    attempt.record("allowed", `${attempt.reason}; TLS intercepted: network.secrets names this host (each request inside is logged on its own)`);
    socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head.length > 0) socket.unshift(head);
    const host = bare(url.hostname);
    const secure = new tls.TLSSocket(socket as net.Socket, { isServer: true, secureContext: this.ca!.secureContextFor(host) });
    (secure as tls.TLSSocket & { agentboxOrigin?: string }).agentboxOrigin = url.origin;
    this.track(secure);
    secure.on("error", () => secure.destroy());
    this.intercepted.emit("connection", secure);
  }

  /**
   * A plain-HTTP request in absolute form (or, with `origin`, one from inside an intercepted
   * tunnel): checked, then sent on its own connection.
   */
  private async forward(req: http.IncomingMessage, res: http.ServerResponse, origin?: string): Promise<void> {
    const raw = origin !== undefined ? `${origin}${req.url?.startsWith("/") ? req.url : "/"}` : (req.url ?? "");
    const method = req.method ?? "GET";
    let target: Pick<NetworkLogEntry, "url" | "host" | "port"> = { url: "", host: "", port: null };
    let asUrl: URL | undefined;
    try {
      asUrl = new URL(raw);
      if (asUrl.protocol === "http:" || asUrl.protocol === "https:") target = { url: urlForLog(asUrl), host: asUrl.hostname, port: schemeAndPort(asUrl).port };
    } catch {
      asUrl = undefined;
    }
    const attempt = new Attempt(this.log, method, target);
    let upstream: http.ClientRequest | undefined;
    try {
      if (!asUrl) throw new Refusal(403, `${JSON.stringify(raw.slice(0, 100))} is not an absolute http(s) URL (this is a proxy: set HTTP_PROXY, do not connect to it as a server)`);
      const url = this.checkOrRefuse(raw);
      const addresses = await this.addresses(url, attempt);
      this.slot(attempt);
      let pairs: HeaderPair[] = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        const k = req.rawHeaders[i]!;
        // Host is the checked URL's (Node sets it): a guest's own Host could steer a shared front
        // end (a CDN) to another site, with a secret's value on it.
        if (!HOP_HEADERS.has(k.toLowerCase()) && k.toLowerCase() !== "host") pairs.push([k, req.rawHeaders[i + 1]!]);
      }
      // A secret's host: its values in place of the placeholders, and an uncompressed answer to scrub.
      const secret = this.secrets !== undefined && this.secrets.forUrl(url).length > 0;
      let sent = url;
      if (secret) {
        const sub = this.secrets!.substitute(pairs, url);
        pairs = sub.headers.filter(([k]) => k.toLowerCase() !== "accept-encoding");
        pairs.push(["Accept-Encoding", "identity"]);
        sent = sub.url;
      }
      const headers: http.OutgoingHttpHeaders = {};
      for (const [k, v] of pairs) {
        const prev = headers[k];
        headers[k] = prev === undefined ? v : ([] as string[]).concat(prev as string | string[], v);
      }
      const host = bare(url.hostname);
      const r = (url.protocol === "https:" ? https : http).request({
        host,
        port: schemeAndPort(url).port,
        path: `${sent.pathname}${sent.search}`,
        method,
        headers,
        lookup: pinnedLookup(host, addresses),
        agent: false,
        servername: net.isIP(host) ? undefined : host,
        ...(upstreamTls.ca ? { ca: upstreamTls.ca } : {}),
      });
      upstream = r;
      r.on("socket", (s) => {
        this.track(s);
        s.once("connect", () => {
          if (s.remoteAddress) attempt.address = s.remoteAddress;
        });
      });
      const timer = setTimeout(() => r.destroy(new Error(`the connection lasted longer than network.connectionTimeoutMs (${this.grant.connectionTimeoutMs} ms)`)), this.grant.connectionTimeoutMs);
      timer.unref();
      let finished = false;
      const done = (error?: string) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        if (r.socket) this.release(r.socket);
        else this.active = Math.max(0, this.active - 1);
        attempt.record("allowed", attempt.reason, error);
      };
      req.on("data", (chunk: Buffer) => {
        attempt.bytesSent += chunk.length;
        if (attempt.bytesSent > this.grant.maxConnectionBytesOut) r.destroy(new Error(`the request sent more than network.maxConnectionBytesOut (${this.grant.maxConnectionBytesOut} bytes)`));
      });
      req.pipe(r);
      r.on("error", (e) => {
        const why = this.scrub(e.message);
        done(why);
        if (!res.headersSent) this.answer(res, 502, "Bad Gateway", `agentbox: the request to ${url.host} failed: ${why}`, "NETWORK_ERROR");
        else res.destroy();
      });
      r.on("response", (up) => {
        attempt.status = up.statusCode ?? 0;
        const out: string[] = [];
        for (let i = 0; i + 1 < up.rawHeaders.length; i += 2) {
          const k = up.rawHeaders[i]!.toLowerCase();
          // A scrubbed body may change length: it goes chunked.
          if (HOP_HEADERS.has(k) || (secret && k === "content-length")) continue;
          out.push(secret ? this.secrets!.scrub(up.rawHeaders[i]!) : up.rawHeaders[i]!, secret ? this.secrets!.scrub(up.rawHeaders[i + 1]!) : up.rawHeaders[i + 1]!);
        }
        res.writeHead(up.statusCode ?? 502, secret ? this.secrets!.scrub(up.statusMessage ?? "") : up.statusMessage, out);
        up.on("data", (chunk: Buffer) => {
          attempt.bytesReceived += chunk.length;
          if (attempt.bytesReceived > this.grant.maxConnectionBytesIn) {
            const why = `the response was larger than network.maxConnectionBytesIn (${this.grant.maxConnectionBytesIn} bytes); the connection was cut`;
            done(why);
            up.destroy();
            res.destroy();
          }
        });
        if (secret) up.pipe(scrubbingStream(this.secrets!)).pipe(res);
        else up.pipe(res);
        up.on("end", () => done());
        up.on("error", (e) => {
          done(this.scrub(e.message));
          res.destroy();
        });
      });
      res.on("close", () => {
        if (!res.writableFinished) r.destroy();
      });
    } catch (e) {
      if (upstream) upstream.destroy();
      this.refuse(e, attempt, (status, phrase, body) => this.answer(res, status, phrase, body, status === 403 ? "NETWORK_DENIED" : "NETWORK_ERROR"));
    }
  }

  /** `text` without any secret's value (error messages may quote what was sent). */
  private scrub(text: string): string {
    return this.secrets ? this.secrets.scrub(text) : text;
  }

  /** Record a refusal or failure and answer it. */
  private refuse(e: unknown, attempt: Attempt, answer: (status: number, phrase: string, body: string) => void): void {
    const r = e instanceof Refusal ? e : new Refusal(502, `the connection failed: ${this.scrub((e as Error).message)}`, "", "error");
    if (r.decision === "denied") attempt.record("denied", r.reason);
    else if (attempt.reason) attempt.record("allowed", attempt.reason, r.message);
    else attempt.record("error", r.message);
    const phrase = r.status === 403 ? `Forbidden by agentbox: ${r.message}` : r.status === 503 ? `Service Unavailable: ${r.message}` : `Bad Gateway: ${r.message}`;
    // A reason phrase is one line of visible ASCII: what curl and Python show the user.
    answer(r.status, phrase.replace(/[^\x20-\x7e]/g, "?").slice(0, 300), `agentbox: ${r.message}\n`);
  }

  private answer(res: http.ServerResponse, status: number, phrase: string, body: string, code: string): void {
    if (res.headersSent) return void res.destroy();
    res.writeHead(status, phrase, { "content-type": "text/plain", "content-length": Buffer.byteLength(body), "x-agentbox-error": code, connection: "close" });
    res.end(body);
  }

  private check(raw: string) {
    return checkUrl(raw, this.rules, this.deny);
  }

  /** The URL if the grant lets it through; else the refusal, naming the grant (`first`: an earlier check's refusal to report instead). */
  private checkOrRefuse(raw: string, first?: Extract<ReturnType<typeof checkUrl>, { ok: false }>): URL {
    const r = this.check(raw);
    if (r.ok) return r.url;
    const f = first ?? r;
    const message = f.denied !== undefined ? `refused: ${f.message}` : `refused: ${f.message}; allowed: ${this.grant.allow.join(", ")}`;
    throw new Refusal(403, message, f.reason ?? f.message);
  }

  /** The checked addresses of the URL's host, resolved on the host; the connection is pinned to them. */
  private async addresses(url: URL, attempt: Attempt): Promise<string[]> {
    const host = bare(url.hostname);
    let addresses: string[];
    if (net.isIP(host)) addresses = [host];
    else {
      try {
        addresses = [...new Set(await this.resolve(host))];
      } catch (e) {
        throw new Refusal(502, `${host} could not be resolved (${(e as Error).message})`, "", "error");
      }
    }
    const d = checkAddresses(url, addresses, this.rules, this.deny);
    if (!d.ok) throw new Refusal(403, `refused: ${d.reason}`, d.reason);
    attempt.reason = d.reason;
    attempt.address = addresses[0]!;
    return addresses;
  }

  /** Take one of the grant's connections, or refuse (503) when all are in use. */
  private slot(attempt: Attempt): void {
    if (this.active >= this.grant.maxConnections) {
      attempt.reason = "";
      throw new Refusal(503, `more than network.maxConnections (${this.grant.maxConnections}) connections at once`);
    }
    this.active++;
  }

  /** Give back the connection `s` held (once, however many ways it ends). */
  private release(s: Duplex): void {
    if (this.released.has(s)) return;
    this.released.add(s);
    this.active = Math.max(0, this.active - 1);
  }

  /** Pass bytes both ways, counting and capping them, within the connection's lifetime. */
  private splice(client: Duplex, upstream: net.Socket, attempt: Attempt): void {
    const g = this.grant;
    let error: string | undefined;
    const cut = (why: string) => {
      error ??= why;
      client.destroy();
      upstream.destroy();
    };
    const timer = setTimeout(() => cut(`the connection lasted longer than network.connectionTimeoutMs (${g.connectionTimeoutMs} ms); it was cut`), g.connectionTimeoutMs);
    timer.unref();
    client.on("data", (chunk: Buffer) => {
      attempt.bytesSent += chunk.length;
      if (attempt.bytesSent > g.maxConnectionBytesOut) return cut(`the connection sent more than network.maxConnectionBytesOut (${g.maxConnectionBytesOut} bytes); it was cut`);
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on("drain", () => client.resume());
    upstream.on("data", (chunk: Buffer) => {
      attempt.bytesReceived += chunk.length;
      if (attempt.bytesReceived > g.maxConnectionBytesIn) return cut(`the connection received more than network.maxConnectionBytesIn (${g.maxConnectionBytesIn} bytes); it was cut`);
      if (!client.write(chunk)) upstream.pause();
    });
    client.on("drain", () => upstream.resume());
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
    client.on("error", (e) => cut(e.message));
    upstream.on("error", (e) => cut(e.message));
    let closes = 0;
    const onClose = () => {
      if (++closes < 2) {
        // One side is gone: the other cannot carry on alone for long.
        return;
      }
      clearTimeout(timer);
      this.release(upstream);
      attempt.record("allowed", attempt.reason, error);
    };
    client.once("close", onClose);
    upstream.once("close", onClose);
  }

  private track(s: Duplex): void {
    this.open.add(s);
    s.once("close", () => this.open.delete(s));
  }
}

/** A URL's hostname without IPv6 brackets. */
function bare(hostname: string): string {
  return hostname.startsWith("[") ? hostname.slice(1, -1) : hostname;
}
