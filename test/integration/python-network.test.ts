// The network grant of nano-tier Python sandboxes: urllib.request and http.client reach the host's
// fetch broker (the same one JavaScript's fetch uses) through the worker's network device, so the
// grant, the address checks, the caps and the network log apply as they do for JavaScript. The
// test's HTTP server listens on 127.0.0.1; other names are mapped in the test's own resolver (the
// host's dns.lookup, mocked); the worker itself has no network.
import assert from "node:assert/strict";
import dns from "node:dns/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it, mock } from "node:test";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";

let server: http.Server;
let port: number;
const seen: string[] = [];

before(async () => {
  server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      if (req.url === "/json") return res.writeHead(200, { "content-type": "application/json", "x-test": "yes" }).end(JSON.stringify({ hello: "world" }));
      if (req.url === "/echo") {
        const echoed = { method: req.method, type: req.headers["content-type"] ?? null, key: req.headers["x-key"] ?? null, body };
        return res.writeHead(201, "Made", { "content-type": "application/json" }).end(JSON.stringify(echoed));
      }
      if (req.url === "/big") return res.writeHead(200).end(Buffer.alloc(300_000, 120));
      if (req.url === "/to-json") return res.writeHead(302, { location: "/json" }).end();
      if (req.url === "/slow") return setTimeout(() => res.end("late"), 3000);
      res.writeHead(404, { "content-type": "text/plain" }).end("no such page");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

/** Run `code`, which prints one line of JSON, and parse it. */
async function guestJson<T>(sb: Sandbox, code: string): Promise<T> {
  const r = await sb.runCode(code);
  assert.equal(r.error, undefined, r.error?.traceback);
  return JSON.parse(r.stdout) as T;
}

/** Python that runs `call` (an expression) and prints what it raised: class, reason type, reason. */
function urlErrorOf(call: string): string {
  return [
    "import json, urllib.request, urllib.error",
    "try:",
    `    ${call}`,
    "    print(json.dumps({'raised': None}))",
    "except urllib.error.HTTPError as e:",
    "    print(json.dumps({'raised': 'HTTPError', 'code': e.code, 'body': e.read().decode()}))",
    "except urllib.error.URLError as e:",
    "    print(json.dumps({'raised': 'URLError', 'reasonType': type(e.reason).__name__, 'reason': str(e.reason), 'code': getattr(e.reason, 'code', None)}))",
  ].join("\n");
}

interface Raised {
  raised: string | null;
  reasonType?: string;
  reason?: string;
  code?: string | number | null;
  body?: string;
}

describe("python network grant: the requests-compatible module", () => {
  it("get with params and headers, post json and form data, Session headers, raise_for_status, a refusal as ConnectionError", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const base = `http://127.0.0.1:${port}`;
    const out = await guestJson<Record<string, unknown>>(
      sb,
      `import json, requests
r = requests.get("${base}/json", headers={"X-Key": "k"}, timeout=10)
p = requests.post("${base}/echo", json={"a": 1}, headers={"X-Key": "k1"})
f = requests.post("${base}/echo", data={"b": "2 3"})
with requests.Session() as s:
    s.headers["X-Key"] = "session"
    e = s.put("${base}/echo", data="raw")
missing = requests.get("${base}/nope")
try:
    missing.raise_for_status()
    status_error = None
except requests.HTTPError as err:
    status_error = str(err)
try:
    requests.get("http://example.com/")
    refused = None
except requests.exceptions.ConnectionError as err:
    refused = str(err)
print(json.dumps({"json": r.json(), "status": r.status_code, "ok": r.ok, "ctype": r.headers["Content-Type"], "xtest": r.headers.get("x-TEST"),
  "post": p.json(), "postStatus": [p.status_code, p.reason], "form": f.json(), "session": e.json(), "missing": [missing.status_code, missing.text, bool(missing)],
  "statusError": status_error, "refused": refused, "version": requests.__version__, "redirected": requests.get("${base}/to-json").url}))`,
    );
    assert.deepEqual(out.json, { hello: "world" });
    assert.deepEqual([out.status, out.ok, out.ctype, out.xtest], [200, true, "application/json", "yes"]);
    assert.deepEqual(out.post, { method: "POST", type: "application/json", key: "k1", body: '{"a": 1}' });
    assert.deepEqual(out.postStatus, [201, "Made"]);
    assert.deepEqual(out.form, { method: "POST", type: "application/x-www-form-urlencoded", key: null, body: "b=2+3" });
    assert.deepEqual(out.session, { method: "PUT", type: null, key: "session", body: "raw" });
    assert.deepEqual(out.missing, [404, "no such page", false]);
    assert.equal(out.statusError, `404 Client Error: Not Found for url: ${base}/nope`);
    assert.match(String(out.refused), /^fetch refused: http:\/\/example\.com:80 is not in the sandbox's network grant/);
    assert.match(String(out.version), /agentbox/);
    assert.equal(out.redirected, `${base}/json`, "the host followed the redirect; the final URL is reported");
  });
});

describe("python network grant: urllib.request and http.client", () => {
  it("GET and POST round trip with headers and body, through urllib and http.client; the log records them", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const get = await guestJson<unknown[]>(
      sb,
      [
        "import json, urllib.request",
        `r = urllib.request.urlopen("http://127.0.0.1:${port}/json")`,
        "print(json.dumps([r.status, r.reason, r.headers['X-Test'], r.headers.get_content_type(), json.loads(r.read()), r.geturl()]))",
      ].join("\n"),
    );
    assert.deepEqual(get, [200, "OK", "yes", "application/json", { hello: "world" }, `http://127.0.0.1:${port}/json`]);
    const post = await guestJson<unknown[]>(
      sb,
      [
        "import json, urllib.request",
        `req = urllib.request.Request("http://127.0.0.1:${port}/echo", data=b"payload", headers={"X-Key": "k1", "Content-Type": "text/plain", "Host": "evil.example"}, method="PUT")`,
        "with urllib.request.urlopen(req) as r:",
        "    print(json.dumps([r.status, r.reason, json.loads(r.read())]))",
      ].join("\n"),
    );
    assert.deepEqual(post, [201, "Made", { method: "PUT", type: "text/plain", key: "k1", body: "payload" }]);
    // http.client directly: two requests on one connection object, a chunked body.
    const direct = await guestJson<unknown[]>(
      sb,
      [
        "import http.client, json",
        `c = http.client.HTTPConnection("127.0.0.1", ${port}, timeout=30)`,
        'c.request("POST", "/echo", body="abc", headers={"Content-Type": "x/y"})',
        "first = json.loads(c.getresponse().read())",
        'c.request("POST", "/echo", body=iter([b"chunk-", b"ed"]), headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)',
        "second = json.loads(c.getresponse().read())",
        'c.request("HEAD", "/json")',
        "h = c.getresponse()",
        "print(json.dumps([first, second, h.status, h.read().decode()]))",
      ].join("\n"),
    );
    assert.deepEqual(direct, [
      { method: "POST", type: "x/y", key: null, body: "abc" },
      { method: "POST", type: null, key: null, body: "chunk-ed" },
      200,
      "",
    ]);
    // Redirects are followed on the host, every hop checked; the response says where it ended.
    const redirected = await guestJson<unknown[]>(sb, `import json, urllib.request\nr = urllib.request.urlopen("http://127.0.0.1:${port}/to-json")\nprint(json.dumps([r.status, r.geturl()]))`);
    assert.deepEqual(redirected, [200, `http://127.0.0.1:${port}/json`]);
    const log = sb.network.log();
    assert.deepEqual(
      log.map((e) => [e.method, e.url, e.decision, e.status, e.hop]),
      [
        ["GET", `http://127.0.0.1:${port}/json`, "allowed", 200, 0],
        ["PUT", `http://127.0.0.1:${port}/echo`, "allowed", 201, 0],
        ["POST", `http://127.0.0.1:${port}/echo`, "allowed", 201, 0],
        ["POST", `http://127.0.0.1:${port}/echo`, "allowed", 201, 0],
        ["HEAD", `http://127.0.0.1:${port}/json`, "allowed", 200, 0],
        ["GET", `http://127.0.0.1:${port}/to-json`, "allowed", 302, 0],
        ["GET", `http://127.0.0.1:${port}/json`, "allowed", 200, 1],
      ],
    );
    assert.equal(log[1]!.bytesSent, "payload".length);
  });

  it("HTTPError for a 404, its body readable; a host not in the grant raises URLError naming the rule", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const notFound = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/missing")`));
    assert.deepEqual(notFound, { raised: "HTTPError", code: 404, body: "no such page" });
    const before = seen.length;
    const denied = await guestJson<Raised>(sb, urlErrorOf('urllib.request.urlopen("http://example.com/")'));
    assert.deepEqual(denied, {
      raised: "URLError",
      reasonType: "NetworkError",
      reason: `fetch refused: http://example.com:80 is not in the sandbox's network grant (network.allow); allowed: 127.0.0.1:${port}`,
      code: "NETWORK_DENIED",
    });
    const otherPort = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port + 1}/")`));
    assert.match(otherPort.reason ?? "", /is not in the sandbox's network grant \(network\.allow\)/);
    assert.equal(seen.length, before, "refused requests never reach a server");
    const log = sb.network.log();
    assert.deepEqual(log.slice(-2).map((e) => [e.host, e.decision]), [["example.com", "denied"], ["127.0.0.1", "denied"]]);
  });

  it("https goes through the host too (here: a TLS handshake with a plain HTTP server fails, as a URLError)", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const r = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("https://127.0.0.1:${port}/json")`));
    assert.equal(r.raised, "URLError");
    assert.match(r.reason ?? "", new RegExp(`^fetch to 127\\.0\\.0\\.1:${port} failed: `));
    assert.deepEqual(sb.network.log().map((e) => [e.url, e.decision]), [[`https://127.0.0.1:${port}/json`, "allowed"]]);
  });

  it("the grant's caps: an oversized response or request body is a URLError naming the cap; the sandbox lives on", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`], maxResponseBytes: 100_000, maxRequestBytes: 1000, timeoutMs: 300 } });
    const big = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/big")`));
    assert.deepEqual(big, {
      raised: "URLError",
      reasonType: "NetworkError",
      reason: `fetch: the response from 127.0.0.1:${port} is larger than network.maxResponseBytes (100000 bytes)`,
      code: null, // sent, then cut: not a refusal
    });
    const body = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/echo", data=b"x" * 2000)`));
    assert.equal(body.raised, "URLError");
    assert.match(body.reason ?? "", /request body of 2000 bytes is larger than network\.maxRequestBytes \(1000\)/);
    const slow = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/slow")`));
    assert.match(slow.reason ?? "", /timed out after 300 ms/);
    const ok = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/json").read()`));
    assert.deepEqual(ok, { raised: null });
  });

  it("the timeout given to urlopen ends the wait in the guest", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`], timeoutMs: 60_000 } });
    const t0 = Date.now();
    const r = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/slow", timeout=0.3)`));
    assert.deepEqual(r, { raised: "URLError", reasonType: "NetworkTimeout", reason: "timed out after 300 ms (the timeout the request was given)", code: null });
    assert.ok(Date.now() - t0 < 2500, "did not wait for the server");
    const isTimeout = await sb.runCode(`import http.client\nc = http.client.HTTPConnection("127.0.0.1", ${port}, timeout=0.2)\nc.request("GET", "/slow")\ntry:\n    c.getresponse()\nexcept TimeoutError as e:\n    print("TimeoutError", e)`);
    assert.equal(isTimeout.stdout, "TimeoutError timed out after 200 ms (the timeout the request was given)\n");
    const byDefault = await guestJson<Raised>(sb, `import socket\nsocket.setdefaulttimeout(0.25)\n${urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/slow")`)}`);
    assert.equal(byDefault.reason, "timed out after 250 ms (the timeout the request was given)");
  });

  it("a run's time limit stops a guest blocked on a response; the sandbox lives on", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`], timeoutMs: 60_000 }, limits: { timeoutMs: 500 } });
    const t0 = Date.now();
    const r = await sb.runCode(`import urllib.request\nurllib.request.urlopen("http://127.0.0.1:${port}/slow").read()`);
    assert.equal(r.limitHit, "timeoutMs");
    assert.equal(r.error?.name, "KeyboardInterrupt");
    assert.ok(Date.now() - t0 < 2500, `stopped at the limit, not when the server answered (${Date.now() - t0} ms)`);
    assert.equal((await sb.runCode("1 + 1")).value, "2");
    const after = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/json").read()`));
    assert.deepEqual(after, { raised: null }, "the next request gets its own answer, not the abandoned one's");
    const slowEntry = sb.network.log().find((e) => e.url.endsWith("/slow"));
    assert.equal(slowEntry?.error, "fetch: the run ended");
  });

  it("a guest that ignores SIGINT is not left waiting: its request is abandoned at the time limit", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`], timeoutMs: 60_000 }, limits: { timeoutMs: 500 } });
    const t0 = Date.now();
    const r = await sb.runCode(`import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n${urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/slow")`)}`);
    assert.ok(Date.now() - t0 < 2500);
    assert.equal(r.limitHit, "timeoutMs");
    assert.deepEqual(JSON.parse(r.stdout), { raised: "URLError", reasonType: "NetworkError", reason: "the request was abandoned: the run was interrupted", code: null });
  });

  it("without a grant, urllib and http.client fail clearly and nothing is sent", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    const before = seen.length;
    const r = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://127.0.0.1:${port}/json")`));
    assert.deepEqual(r, {
      raised: "URLError",
      reasonType: "NetworkError",
      reason: "no network: the sandbox was created without a network grant (network: { allow: [...] })",
      code: "NETWORK_DENIED",
    });
    const direct = await sb.runCode(`import http.client\nc = http.client.HTTPConnection("127.0.0.1", ${port})\nc.request("GET", "/json")\nc.getresponse()`);
    assert.equal(direct.error?.name, "NetworkError");
    assert.match(direct.error?.message ?? "", /^no network: /);
    // Sockets stay closed whatever the grant.
    const sock = await sb.runCode(`import socket\nsocket.create_connection(("127.0.0.1", ${port}))`);
    assert.equal(sock.error?.name, "PermissionError");
    assert.equal(seen.length, before);
    assert.deepEqual(sb.network.log(), []);
  });

  it("a name resolving to loopback is refused unless an entry names the address (the host decides, as for JavaScript)", async (t) => {
    const m = mock.method(dns, "lookup", async (host: string, options: object) =>
      host === "app.test" ? [{ address: "127.0.0.1", family: 4 }] : (dns.lookup as unknown as (h: string, o: object) => Promise<unknown>)(host, options),
    );
    t.after(() => m.mock.restore());
    {
      await using sb = await Sandbox.create({ language: "python", network: { allow: [`app.test:${port}`] } });
      const r = await guestJson<Raised>(sb, urlErrorOf(`urllib.request.urlopen("http://app.test:${port}/json")`));
      assert.equal(r.reason, `fetch refused: app.test resolves to 127.0.0.1, a loopback address; add "127.0.0.1:${port}" to network.allow to permit it`);
    }
    {
      await using sb = await Sandbox.create({ language: "python", network: { allow: [`app.test:${port}`, `127.0.0.1:${port}`] } });
      const r = await guestJson<unknown>(sb, `import json, urllib.request\nprint(json.dumps(json.loads(urllib.request.urlopen("http://app.test:${port}/json").read())))`);
      assert.deepEqual(r, { hello: "world" });
      assert.equal(sb.network.log()[0]!.address, "127.0.0.1");
    }
  });

  it("the guest's writes to the network device are checked in the worker (malformed, oversized, busy)", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`], maxRequestBytes: 100 } });
    // The descriptor is kept in python/network.guest.py's closures: the guest can reach it, as it
    // can reach everything in its own process, and write anything to it.
    const r = await guestJson<string[]>(
      sb,
      [
        "import http.client, json, os",
        "def cells(f):",
        "    return {n: c.cell_contents for n, c in zip(f.__code__.co_freevars, f.__closure__ or ())}",
        "fd = cells(cells(http.client.HTTPConnection.getresponse)['exchange'])['state']['fd']",
        "def ask(data):",
        "    os.write(fd, data)",
        "    out = b''",
        "    while chunk := os.read(fd, 1 << 16):",
        "        out += chunk",
        "    return json.loads(out.partition(b'\\n')[0])['error']['message']",
        "answers = [ask(b'not json\\n'), ask(b'no newline'), ask(b'{\"method\": \"get\", \"url\": \"x\", \"headers\": []}\\n'),",
        "           ask(b'{\"method\": \"GET\", \"url\": 1, \"headers\": []}\\n'), ask(b'{\"method\": \"GET\", \"url\": \"x\", \"headers\": [], \"extra\": 1}\\n'),",
        `           ask(b'{"method": "POST", "url": "http://127.0.0.1:${port}/echo", "headers": []}\\n' + b'x' * 101)]`,
        `os.write(fd, b'{"method": "GET", "url": "http://127.0.0.1:${port}/json", "headers": []}\\n')`,
        "try:",
        `    os.write(fd, b'{"method": "GET", "url": "http://127.0.0.1:${port}/json", "headers": []}\\n')`,
        "except OSError as e:",
        "    answers.append(os.strerror(e.errno))",
        "while os.read(fd, 1 << 16):",
        "    pass",
        "print(json.dumps(answers))",
      ].join("\n"),
    );
    assert.deepEqual(r.slice(0, 6), [
      "malformed request: the header line is not JSON",
      "malformed request: no header line within its size cap",
      'invalid method "get"',
      "malformed request: no URL",
      "malformed request: unknown fields",
      "the request body of 101 bytes is larger than network.maxRequestBytes (100)",
    ]);
    assert.match(r[6] ?? "", /busy/i, "one request at a time: a second write before the answer is refused");
    assert.equal(sb.network.log().length, 1, "only the well-formed request reached the host");
  });
});
