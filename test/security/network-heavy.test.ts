// The heavy tier's network, on both backends (gVisor and the microVM): the guest has no network
// interface; HTTP clients go through the agent's proxy on the guest's loopback, tunnelled to the
// host, which checks every connection against the grant (egress.ts). Loopback only: the test's
// servers listen on 127.0.0.1 and names are mapped in the test's own resolver (the host's
// dns.lookup, mocked); the guest never resolves a name itself.
import assert from "node:assert/strict";
import dns from "node:dns/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it, mock } from "node:test";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";
import { gvisor, microvm, type HeavyBackend } from "../conformance/heavy.js";

interface Answer {
  status?: number;
  reason?: string;
  body?: string;
  error?: string;
}

/** Python that fetches each URL with urllib (through the proxy the environment names) and prints what came back. */
function fetchAll(urls: string[]): string {
  return `import json, urllib.request, urllib.error
def get(url):
    try:
        r = urllib.request.urlopen(url, timeout=30)
        return {"status": r.status, "body": r.read().decode()[:300]}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "reason": e.reason, "body": e.read().decode()[:500]}
    except Exception as e:
        return {"error": repr(e)[:500]}
print(json.dumps([get(u) for u in ${JSON.stringify(urls)}]))
`;
}

async function guestFetch(sb: Sandbox, urls: string[]): Promise<Answer[]> {
  const r = await sb.commands.run(["python3", "-c", fetchAll(urls)]);
  assert.equal(r.exitCode, 0, r.stderr);
  return JSON.parse(r.stdout) as Answer[];
}

function listen(handler: http.RequestListener): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port })));
}

const NAMES: Record<string, string> = { "app.test": "127.0.0.1", "evil.test": "127.0.0.1", "denied.test": "127.0.0.1", "private.test": "10.0.0.7" };

for (const backend of [gvisor, microvm] as HeavyBackend[]) {
  describe(`heavy tier network (${backend.name})`, { skip: backend.skip }, () => {
    let app: { server: http.Server; port: number };
    let evil: { server: http.Server; port: number };
    let evilHits = 0;
    let sb: Sandbox;
    const lookup = dns.lookup;

    before(async () => {
      await backend.prepare();
      app = await listen((req, res) => {
        if (req.url === "/redirect-out") {
          res.writeHead(302, { location: `http://evil.test:${evil.port}/` });
          return void res.end();
        }
        if (req.url === "/big") return void res.end("x".repeat(100_000));
        if (req.url === "/hang") return; // never answers
        res.end(`hello ${req.method} ${req.url} host=${req.headers.host}`);
      });
      evil = await listen((_req, res) => {
        evilHits++;
        res.end("evil");
      });
      mock.method(dns, "lookup", async (host: string, options: object) => (host in NAMES ? [{ address: NAMES[host], family: 4 }] : (lookup as (h: string, o: object) => Promise<unknown>)(host, options)));
      sb = await Sandbox.create({
        ...backend.opts,
        network: { allow: [`app.test:${app.port}`, `127.0.0.1:${app.port}`, `private.test:${app.port}`, `denied.test:${app.port}`], deny: ["denied.test"] },
      });
    });

    after(async () => {
      await sb?.kill();
      mock.restoreAll();
      app?.server.closeAllConnections();
      app?.server.close();
      evil?.server.close();
    });

    it("an allowed name reaches its server through the proxy; the guest sees the proxy in its environment", async () => {
      const [a] = await guestFetch(sb, [`http://app.test:${app.port}/hello?q=1`]);
      assert.deepEqual(a, { status: 200, body: `hello GET /hello?q=1 host=app.test:${app.port}` });
      const env = await sb.runCode("import os\n(os.environ['HTTP_PROXY'], os.environ['https_proxy'], os.environ['NO_PROXY'])");
      assert.equal(env.value, "('http://127.0.0.1:3128', 'http://127.0.0.1:3128', 'localhost,127.0.0.1,::1')");
      // The Host the server sees is the checked URL's, whatever the guest wrote (no virtual-host steering).
      const steered = await sb.runCode(`import urllib.request\nurllib.request.urlopen(urllib.request.Request("http://app.test:${app.port}/h", headers={"Host": "evil.test"})).read().decode()`);
      assert.equal(steered.value, `'hello GET /h host=app.test:${app.port}'`);
      const entry = sb.network.log().find((e) => e.url.endsWith("/hello"))!;
      assert.equal(entry.decision, "allowed");
      assert.equal(entry.url, `http://app.test:${app.port}/hello`, "no query in the log");
      assert.equal(entry.address, "127.0.0.1");
      assert.equal(entry.status, 200);
      assert.ok(entry.bytesReceived > 0);
    });

    it("refused: a host not granted, a port not granted, a deny entry, a redirect to a host not granted, a name resolving to a private address", async () => {
      const hitsBefore = evilHits;
      const [host, port, denied, redirect, priv] = await guestFetch(sb, [
        `http://evil.test:${evil.port}/`,
        `http://app.test:${app.port + 1}/`,
        `http://denied.test:${app.port}/`,
        `http://app.test:${app.port}/redirect-out`,
        `http://private.test:${app.port}/`,
      ]);
      assert.equal(host!.status, 403);
      assert.match(host!.reason!, /^Forbidden by agentbox: refused: http:\/\/evil\.test:\d+ is not in the sandbox's network grant/);
      assert.equal(port!.status, 403);
      assert.equal(denied!.status, 403);
      assert.match(denied!.body!, /network\.deny entry "denied\.test"/);
      assert.equal(redirect!.status, 403, "the redirect's second hop is checked like any request");
      assert.equal(priv!.status, 403);
      assert.match(priv!.body!, /private\.test resolves to 10\.0\.0\.7, a private address; add "10\.0\.0\.7:\d+" to network\.allow/);
      assert.equal(evilHits, hitsBefore, "nothing reached the refused server");
      const denials = sb.network.log().filter((e) => e.decision === "denied");
      assert.ok(denials.some((e) => e.host === "private.test" && e.address === null));
    });

    it("HTTPS goes through CONNECT, checked the same way: a refused tunnel is a 403 the client reports", async () => {
      const [t] = await guestFetch(sb, [`https://evil.test:${evil.port}/`]);
      assert.match(t!.error!, /Tunnel connection failed: 403 Forbidden by agentbox: refused/);
      const entry = sb.network.log().at(-1)!;
      assert.equal(entry.method, "CONNECT");
      assert.equal(entry.url, `evil.test:${evil.port}`);
      assert.equal(entry.decision, "denied");
    });

    it("raw sockets that ignore the proxy reach nothing; the guest cannot resolve names; the proxy is no server", async () => {
      const code = `import json, socket
out = {}
for name, addr in [("host", ("127.0.0.1", ${app.port})), ("private", ("10.0.0.7", 80)), ("public", ("1.1.1.1", 443))]:
    try:
        socket.create_connection(addr, timeout=3).close()
        out[name] = "connected"
    except OSError as e:
        out[name] = type(e).__name__
try:
    socket.getaddrinfo("app.test", 80)
    out["dns"] = "resolved"
except OSError as e:
    out["dns"] = type(e).__name__
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"GET /hello HTTP/1.1\\r\\nHost: app.test:${app.port}\\r\\nConnection: close\\r\\n\\r\\n")
out["origin-form"] = s.recv(200).decode().split("\\r\\n")[0]
print(json.dumps(out))`;
      const r = await sb.commands.run(["python3", "-c", code]);
      assert.equal(r.exitCode, 0, r.stderr);
      const out = JSON.parse(r.stdout) as Record<string, string>;
      assert.notEqual(out.host, "connected", "the host's loopback is not the guest's");
      assert.notEqual(out.private, "connected");
      assert.notEqual(out.public, "connected");
      assert.notEqual(out.dns, "resolved");
      assert.match(out["origin-form"]!, /^HTTP\/1\.1 403 Forbidden by agentbox: "\/hello" is not an absolute http\(s\) URL/);
    });

    it("the guest's own servers are reached directly (NO_PROXY), without the host", async () => {
      const code = `import threading, http.server, urllib.request
srv = http.server.HTTPServer(("127.0.0.1", 8123), type("H", (http.server.BaseHTTPRequestHandler,), {"do_GET": lambda s: (s.send_response(200), s.end_headers(), s.wfile.write(b"inside")), "log_message": lambda *a: None}))
threading.Thread(target=srv.handle_request, daemon=True).start()
print(urllib.request.urlopen("http://127.0.0.1:8123/", timeout=10).read().decode())`;
      const before = sb.network.log().length;
      const r = await sb.commands.run(["python3", "-c", code]);
      assert.equal(r.stdout, "inside\n", r.stderr);
      assert.equal(sb.network.log().length, before, "the host saw no request");
    });
  });
}

describe("heavy tier network: caps and no grant (gvisor)", { skip: gvisor.skip }, () => {
  let app: { server: http.Server; port: number };
  const held: http.ServerResponse[] = [];
  const lookup = dns.lookup;
  before(async () => {
    await gvisor.prepare();
    // A name: 127.0.0.1 itself is the guest's own loopback (NO_PROXY), never the host's.
    mock.method(dns, "lookup", async (host: string, options: object) => (host === "app.test" ? [{ address: "127.0.0.1", family: 4 }] : (lookup as (h: string, o: object) => Promise<unknown>)(host, options)));
    app = await listen((req, res) => {
      if (req.url === "/big") return void res.end("x".repeat(200_000));
      if (req.url === "/hang") return void held.push(res);
      res.end("ok");
    });
  });
  after(() => {
    mock.restoreAll();
    for (const r of held) r.end();
    app?.server.closeAllConnections();
    app?.server.close();
  });

  it("bytes in past maxConnectionBytesIn cut the connection; past maxConnections, a 503 naming the cap", async () => {
    await using sb = await Sandbox.create({ ...gvisor.opts, network: { allow: [`app.test:${app.port}`, `127.0.0.1:${app.port}`], maxConnectionBytesIn: 50_000, maxConnections: 1 } });
    const [big] = await guestFetch(sb, [`http://app.test:${app.port}/big`]);
    assert.ok(big!.error !== undefined || (big!.body?.length ?? 0) < 200_000, "the response did not arrive whole");
    const cut = sb.network.log().at(-1)!;
    assert.match(cut.error ?? "", /network\.maxConnectionBytesIn \(50000 bytes\)/);
    // One connection held open by a server that never answers; the next is refused at once.
    const code = `import json, threading, time, urllib.request, urllib.error
threading.Thread(target=lambda: urllib.request.urlopen("http://app.test:${app.port}/hang", timeout=60), daemon=True).start()
time.sleep(1.5)
try:
    urllib.request.urlopen("http://app.test:${app.port}/ok", timeout=20)
    print("allowed")
except urllib.error.HTTPError as e:
    print(e.code, e.reason)`;
    const r = await sb.commands.run(["python3", "-c", code]);
    assert.match(r.stdout, /^503 Service Unavailable: more than network\.maxConnections \(1\) connections at once/, r.stderr);
  });

  it("without a grant: no proxy in the environment, nothing listens on the proxy's port", async () => {
    await using sb = await Sandbox.create({ ...gvisor.opts });
    const r = await sb.commands.run(["python3", "-c", `import os, socket\nprint(os.environ.get("HTTP_PROXY"))\ntry:\n    socket.create_connection(("127.0.0.1", 3128), timeout=3)\n    print("listening")\nexcept OSError as e:\n    print(type(e).__name__)`]);
    assert.equal(r.stdout, "None\nConnectionRefusedError\n", r.stderr);
    assert.deepEqual(sb.network.log(), []);
  });
});
