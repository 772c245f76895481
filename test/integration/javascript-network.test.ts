// The network grant of JavaScript sandboxes: a guest `fetch` that the host performs for it, only
// to hosts in `network.allow`, with every redirect hop checked and the grant's caps enforced; names
// resolved on the host, non-public addresses refused unless named; `network.deny` entries refusing
// what allow lets through (hosts, redirect hops, resolved addresses); every attempt in the sandbox's
// network log (library, HTTP route, metrics). The test's HTTP server listens on 127.0.0.1; names
// other than localhost are mapped in the test's own resolver (the host's dns.lookup, mocked); the
// worker itself has no network.
import assert from "node:assert/strict";
import dns from "node:dns/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it, mock } from "node:test";
import { InvalidOptionsError, Sandbox, type NetworkLogEntry } from "../../src/index.js";
import { checkUrl, parseAllowEntry, parseAllowList } from "../../src/policy/network.js";
import { createApp } from "../../src/server/app.js";
import { KeyRing } from "../../src/server/keys.js";
import { ServerMetrics } from "../../src/server/metrics.js";
import { SandboxRegistry } from "../../src/server/registry.js";
import "../helpers.js";

let server: http.Server;
let other: http.Server;
let port: number;
let otherPort: number;
const seen: string[] = [];

before(async () => {
  server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      if (req.url === "/json") return res.writeHead(200, { "content-type": "application/json", "x-test": "yes" }).end(JSON.stringify({ hello: "world" }));
      if (req.url === "/echo") return res.writeHead(201, { "content-type": "text/plain" }).end(`${req.method} ${req.headers["content-type"]} ${req.headers["x-key"]} ${body}`);
      if (req.url === "/big") return res.writeHead(200).end(Buffer.alloc(300_000, 120));
      if (req.url === "/big-chunked") {
        res.writeHead(200); // no content-length: the cap applies while reading
        for (let i = 0; i < 30; i++) res.write(Buffer.alloc(10_000, 121));
        return res.end();
      }
      if (req.url === "/to-json") return res.writeHead(302, { location: "/json" }).end();
      if (req.url === "/to-other") return res.writeHead(302, { location: `http://127.0.0.1:${otherPort}/secret` }).end();
      if (req.url === "/to-evil") return res.writeHead(307, { location: "http://evil.example/steal" }).end();
      if (req.url === "/to-app") return res.writeHead(302, { location: `http://app.test:${port}/json` }).end();
      if (req.url === "/to-app-other") return res.writeHead(302, { location: `http://app.test:${otherPort}/secret?from=redirect` }).end();
      if (req.url === "/loop") return res.writeHead(302, { location: "/loop" }).end();
      if (req.url === "/slow") return setTimeout(() => res.end("late"), 3000);
      res.writeHead(404).end("no");
    });
  });
  other = http.createServer((req, res) => {
    seen.push(`OTHER ${req.url}`);
    res.end("secret");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  await new Promise<void>((r) => other.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
  otherPort = (other.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  other.closeAllConnections();
  await new Promise((r) => server.close(r));
  await new Promise((r) => other.close(r));
});

describe("network grant: matching rules", () => {
  it("parses entries strictly and matches scheme, host and port exactly", () => {
    for (const bad of ["", "http://", "example.com/path", "user@example.com", "*.com", "*.127.0.0.1", "exa mple.com", "example.com:0", "example.com:70000", "ftp://example.com", "example.com."]) {
      assert.equal(typeof parseAllowEntry(bad), "string", bad);
    }
    const rules = parseAllowList(["api.example.com", "*.example.org:8443", "https://secure.example.net", "127.0.0.1:8080", "[::1]:9000"]);
    const ok = (u: string) => checkUrl(u, rules).ok;
    assert.ok(ok("https://api.example.com/v1?q=1"));
    assert.ok(ok("http://API.Example.com/"));
    assert.ok(!ok("https://api.example.com:444/"), "no port in the entry: default ports only");
    assert.ok(!ok("https://x.api.example.com/"), "exact names do not match subdomains");
    assert.ok(ok("https://a.b.example.org:8443/"));
    assert.ok(!ok("https://example.org:8443/"), "*. does not match the apex");
    assert.ok(!ok("https://a.example.org/"), "wrong port");
    assert.ok(!ok("https://evilexample.org:8443/"));
    assert.ok(ok("https://secure.example.net/") && !ok("http://secure.example.net/"));
    assert.ok(ok("http://127.0.0.1:8080/") && ok("http://2130706433:8080/") && ok("http://0x7f.0.0.1:8080/"), "numeric forms are the address they denote");
    assert.ok(!ok("http://127.0.0.2:8080/") && !ok("http://localhost:8080/"));
    assert.ok(ok("http://[::1]:9000/") && ok("http://[0:0:0:0:0:0:0:1]:9000/"));
    assert.ok(!ok("http://user:pw@api.example.com/"), "credentials refused");
    assert.ok(!ok("file:///etc/passwd") && !ok("data:text/plain,x") && !ok("not a url"));
    assert.ok(!ok("http://api.example.com.evil.org/") && !ok("http://api.example.com@evil.org/"));
  });

  it("the option is validated up front", async () => {
    await assert.rejects(Sandbox.create({ language: "javascript", network: { allow: ["http://x/y"] } }), (e: unknown) => e instanceof InvalidOptionsError && /network\.allow\.0/.test(e.message));
    await assert.rejects(Sandbox.create({ language: "javascript", network: { allow: [] } }), InvalidOptionsError);
    await assert.rejects(Sandbox.create({ language: "javascript", network: { allow: ["a.test"], deny: ["a.test/x"] } }), (e: unknown) => e instanceof InvalidOptionsError && /network\.deny\.0/.test(e.message));
    // Python sandboxes take it too: test/integration/python-network.test.ts.
    await assert.rejects(Sandbox.create({ language: "python", network: { allow: ["http://x/y"] } }), (e: unknown) => e instanceof InvalidOptionsError && /network\.allow\.0/.test(e.message));
  });
});

describe("network grant: fetch", () => {
  it("no grant: fetch, Headers and Response are undefined", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    assert.equal((await sb.runCode("[typeof fetch, typeof Headers, typeof Response]")).value, '["undefined","undefined","undefined"]');
  });

  it("allowed GET and POST work; other ports and hosts are refused with the host named", async () => {
    await using sb = await Sandbox.create({ language: "typescript", network: { allow: [`127.0.0.1:${port}`] }, seed: 1 });
    const get = await sb.runCode(`const r = await fetch("http://127.0.0.1:${port}/json");\nconst j: { hello: string } = await r.json();\n[r.status, r.ok, r.headers.get("X-Test"), j.hello, r.url]`);
    assert.equal(get.error, undefined, get.error?.traceback);
    assert.equal(get.value, `[200,true,"yes","world","http://127.0.0.1:${port}/json"]`);
    const post = await sb.runCode(`const p = await fetch("http://127.0.0.1:${port}/echo", { method: "post", headers: { "X-Key": "k1", Host: "evil.example" }, body: "data" });\n[p.status, await p.text()]`);
    assert.equal(post.value, `[201,"POST text/plain;charset=UTF-8 k1 data"]`);
    const bytes = await sb.runCode(`const b = await fetch("http://127.0.0.1:${port}/echo", { method: "PUT", body: new TextEncoder().encode("bin") });\nawait b.text()`);
    assert.equal(bytes.value, '"PUT undefined undefined bin"');
    for (const url of [`http://127.0.0.1:${otherPort}/secret`, `http://localhost:${port}/json`, "https://example.com/", `http://user:pw@127.0.0.1:${port}/json`, "file:///etc/passwd"]) {
      const r = await sb.runCode(`try { await fetch(${JSON.stringify(url)}); "fetched" } catch (e) { [e.name, e.message] }`);
      assert.equal(r.error, undefined, r.error?.traceback);
      const [name, message] = JSON.parse(r.value!) as [string, string];
      assert.equal(name, "TypeError", url);
      assert.match(message, /network grant|not allowed|credentials/, url);
      if (url.includes(String(otherPort))) assert.match(message, new RegExp(`127\\.0\\.0\\.1:${otherPort}.*network\\.allow`));
    }
    assert.ok(!seen.some((s) => s.startsWith("OTHER")), "the refused server was never contacted");
  });

  it("redirects are followed only to allowed hosts, each hop checked", async () => {
    await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`127.0.0.1:${port}`], maxRedirects: 3 } });
    const ok = await sb.runCode(`const r = await fetch("http://127.0.0.1:${port}/to-json");\n[r.redirected, r.url.endsWith("/json"), (await r.json()).hello]`);
    assert.equal(ok.value, '[true,true,"world"]');
    for (const [path, pattern] of [["/to-other", new RegExp(`redirect from 127\\.0\\.0\\.1:${port} refused: http://127\\.0\\.0\\.1:${otherPort}`)], ["/to-evil", /redirect .* refused: http:\/\/evil\.example:80/], ["/loop", /more than 3 redirects/]] as const) {
      const r = await sb.runCode(`try { await fetch("http://127.0.0.1:${port}${path}"); "followed" } catch (e) { e.message }`);
      assert.match(r.value ?? "", pattern, path);
    }
    assert.ok(!seen.some((s) => s.startsWith("OTHER")), "the redirect target was never contacted");
  });

  it("oversized responses and request bodies fail with a clear error; slow ones time out; the sandbox lives on", async () => {
    await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`127.0.0.1:${port}`], maxResponseBytes: 100_000, maxRequestBytes: 1000, timeoutMs: 300 } });
    for (const path of ["/big", "/big-chunked"]) {
      const r = await sb.runCode(`try { await fetch("http://127.0.0.1:${port}${path}"); "read" } catch (e) { [e.name, e.message] }`);
      assert.equal(r.value, `["RangeError","fetch: the response from 127.0.0.1:${port} is larger than network.maxResponseBytes (100000 bytes)"]`, path);
    }
    const body = await sb.runCode(`try { await fetch("http://127.0.0.1:${port}/echo", { method: "POST", body: "x".repeat(2000) }); "sent" } catch (e) { [e.name, e.message] }`);
    assert.match(body.value ?? "", /RangeError.*network\.maxRequestBytes \(1000\)/);
    const slow = await sb.runCode(`try { await fetch("http://127.0.0.1:${port}/slow"); "read" } catch (e) { e.message }`);
    assert.match(slow.value ?? "", /timed out after 300 ms/);
    // Concurrent requests all resolve (maxConcurrent queues the rest).
    const many = await sb.runCode(`(await Promise.all(Array.from({ length: 10 }, () => fetch("http://127.0.0.1:${port}/json").then((r) => r.status)))).join()`);
    assert.equal(many.value, `"${Array(10).fill(200).join()}"`);
  });

  it("a run's time limit stops a run waiting on the network; the sandbox lives on", async () => {
    await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`127.0.0.1:${port}`], timeoutMs: 60_000 }, limits: { timeoutMs: 500 } });
    const r = await sb.runCode(`await fetch("http://127.0.0.1:${port}/slow")`);
    assert.equal(r.limitHit, "timeoutMs");
    assert.equal((await sb.runCode("1 + 1")).value, "2");
  });
});

/** Map names in the host's resolver for the duration of a test; other names resolve as usual. */
function mapNames(t: { after: (fn: () => void) => void }, names: Record<string, string[]>): string[] {
  const asked: string[] = [];
  const real = dns.lookup.bind(dns);
  const m = mock.method(dns, "lookup", async (host: string, options: object) => {
    asked.push(host);
    const addresses = names[host];
    return addresses ? addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })) : real(host, options as { all: true });
  });
  t.after(() => m.mock.restore());
  return asked;
}

/** Run `fetch(url)` in the guest: the status, or the error's name, code and message. */
async function guestFetch(sb: Sandbox, url: string): Promise<{ status?: number; name?: string; code?: string; message?: string }> {
  const r = await sb.runCode(`try { const r = await fetch(${JSON.stringify(url)}); ({ status: r.status }) } catch (e) { ({ name: e.name, code: e.code, message: e.message }) }`);
  assert.equal(r.error, undefined, r.error?.traceback);
  return JSON.parse(r.value!) as { status?: number; name?: string; code?: string; message?: string };
}

describe("network grant: the host decides (addresses)", () => {
  it("a name resolving to a loopback address is refused unless an entry names the address; the log says why", async (t) => {
    const asked = mapNames(t, { "app.test": ["127.0.0.1"] });
    const before = seen.length;
    {
      await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`app.test:${port}`] } });
      const r = await guestFetch(sb, `http://app.test:${port}/json?token=secret`);
      assert.deepEqual(r, {
        name: "TypeError",
        code: "NETWORK_DENIED",
        message: `fetch refused: app.test resolves to 127.0.0.1, a loopback address; add "127.0.0.1:${port}" to network.allow to permit it`,
      });
      assert.equal(seen.length, before, "the server was never contacted");
      const [e, ...rest] = sb.network.log();
      assert.equal(rest.length, 0);
      assert.deepEqual({ ...e, time: undefined, durationMs: undefined }, {
        time: undefined,
        durationMs: undefined,
        method: "GET",
        url: `http://app.test:${port}/json`,
        host: "app.test",
        port,
        address: null,
        hop: 0,
        decision: "denied",
        reason: `app.test resolves to 127.0.0.1, a loopback address; add "127.0.0.1:${port}" to network.allow to permit it`,
        status: null,
        bytesSent: 0,
        bytesReceived: 0,
      });
    }
    await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`app.test:${port}`, `127.0.0.1:${port}`] } });
    assert.deepEqual(await guestFetch(sb, `http://app.test:${port}/json`), { status: 200 });
    assert.equal(seen.at(-1), "GET /json");
    const [e] = sb.network.log();
    assert.equal(e!.decision, "allowed");
    assert.equal(e!.address, "127.0.0.1");
    assert.equal(e!.status, 200);
    assert.equal(e!.bytesReceived, JSON.stringify({ hello: "world" }).length);
    assert.equal(e!.reason, `127.0.0.1 is named in network.allow ("127.0.0.1:${port}")`);
    assert.ok(asked.includes("app.test"), "the name was resolved on the host");
  });

  it('"localhost" in the grant names the loopback addresses for that name', async () => {
    await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`localhost:${port}`] } });
    assert.deepEqual(await guestFetch(sb, `http://localhost:${port}/json`), { status: 200 });
    assert.match(sb.network.log()[0]!.reason, /is loopback and network\.allow names localhost \("localhost:\d+"\)/);
  });

  it("private and metadata addresses behind allowed names are refused before any connection", async (t) => {
    mapNames(t, { "db.test": ["10.0.0.5"], "meta.test": ["169.254.169.254"], "both.test": ["93.184.215.14", "fd00::7"] });
    await using sb = await Sandbox.create({ language: "javascript", network: { allow: ["db.test", "meta.test", "both.test:8080"] } });
    const cases = [
      ["http://db.test/", 'db.test resolves to 10.0.0.5, a private address; add "10.0.0.5" to network.allow to permit it'],
      ["https://meta.test/latest/meta-data/", 'meta.test resolves to 169.254.169.254, a cloud metadata address; add "169.254.169.254" to network.allow to permit it'],
      ["http://both.test:8080/", 'both.test resolves to fd00::7, a private address (unique local, fc00::/7); add "[fd00::7]:8080" to network.allow to permit it'],
    ] as const;
    for (const [url, reason] of cases) assert.deepEqual(await guestFetch(sb, url), { name: "TypeError", code: "NETWORK_DENIED", message: `fetch refused: ${reason}` }, url);
    assert.deepEqual(
      sb.network.log().map((e) => [e.host, e.decision, e.address]),
      cases.map(([url]) => [new URL(url).hostname, "denied", null]),
    );
  });

  it("each redirect hop is resolved and checked: a hop to a name whose address is not named for its port is stopped", async (t) => {
    mapNames(t, { "app.test": ["127.0.0.1"] });
    await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`127.0.0.1:${port}`, `app.test:${port}`, `app.test:${otherPort}`] } });
    const before = seen.length;
    // app.test:${port} resolves to 127.0.0.1, named for that port by "127.0.0.1:${port}": followed.
    assert.deepEqual(await guestFetch(sb, `http://127.0.0.1:${port}/to-app`), { status: 200 });
    assert.deepEqual(seen.slice(before), ["GET /to-app", "GET /json"]);
    // app.test:${otherPort} passes by name, but 127.0.0.1 is not named for that port: stopped.
    const stopped = await guestFetch(sb, `http://127.0.0.1:${port}/to-app-other`);
    assert.equal(stopped.code, "NETWORK_DENIED");
    assert.equal(stopped.message, `redirect from 127.0.0.1:${port} refused: app.test resolves to 127.0.0.1, a loopback address; add "127.0.0.1:${otherPort}" to network.allow to permit it`);
    assert.ok(!seen.some((x) => x.startsWith("OTHER")), "the redirect target was never contacted");
    const log: NetworkLogEntry[] = sb.network.log();
    assert.deepEqual(
      log.map((e) => [e.hop, e.host, e.port, e.decision, e.status]),
      [
        [0, "127.0.0.1", port, "allowed", 302],
        [1, "app.test", port, "allowed", 200],
        [0, "127.0.0.1", port, "allowed", 302],
        [1, "app.test", otherPort, "denied", null],
      ],
    );
    assert.equal(log[3]!.url, `http://app.test:${otherPort}/secret`, "the log keeps no query string");
  });

  it("network.deny wins over allow: a denied host, a redirect to it, a name resolving to a denied address; each refusal names the entry", async (t) => {
    mapNames(t, { "app.test": ["127.0.0.1"], "secret.corp.test": ["127.0.0.1"], "open.corp.test": ["127.0.0.1"] });
    await using sb = await Sandbox.create({
      language: "javascript",
      network: {
        allow: [`127.0.0.1:${port}`, `127.0.0.1:${otherPort}`, `app.test:${otherPort}`, `*.corp.test:${port}`],
        deny: [`127.0.0.1:${otherPort}`, "secret.corp.test"],
      },
    });
    const before = seen.length;
    assert.deepEqual(await guestFetch(sb, `http://127.0.0.1:${otherPort}/secret`), {
      name: "TypeError",
      code: "NETWORK_DENIED",
      message: `fetch refused: http://127.0.0.1:${otherPort} is denied by network.deny entry "127.0.0.1:${otherPort}"`,
    });
    // A deny entry without a port covers every port, though the allow entry gives one.
    assert.deepEqual(await guestFetch(sb, `http://secret.corp.test:${port}/json`), {
      name: "TypeError",
      code: "NETWORK_DENIED",
      message: `fetch refused: http://secret.corp.test:${port} is denied by network.deny entry "secret.corp.test"`,
    });
    assert.deepEqual(await guestFetch(sb, `http://open.corp.test:${port}/json`), { status: 200 });
    const redirected = await guestFetch(sb, `http://127.0.0.1:${port}/to-other`);
    assert.equal(redirected.code, "NETWORK_DENIED");
    assert.equal(redirected.message, `redirect from 127.0.0.1:${port} refused: http://127.0.0.1:${otherPort} is denied by network.deny entry "127.0.0.1:${otherPort}"`);
    // app.test passes by name; the address it resolves to is denied (though an allow entry names it).
    assert.deepEqual(await guestFetch(sb, `http://app.test:${otherPort}/secret`), {
      name: "TypeError",
      code: "NETWORK_DENIED",
      message: `fetch refused: app.test resolves to 127.0.0.1, which is denied by network.deny entry "127.0.0.1:${otherPort}"`,
    });
    assert.ok(!seen.some((x) => x.startsWith("OTHER")), "the denied server was never contacted");
    assert.deepEqual(seen.slice(before), ["GET /json", "GET /to-other"]);
    assert.deepEqual(
      sb.network.log().map((e) => [e.host, e.port, e.hop, e.decision, e.reason]),
      [
        ["127.0.0.1", otherPort, 0, "denied", `http://127.0.0.1:${otherPort} is denied by network.deny entry "127.0.0.1:${otherPort}"`],
        ["secret.corp.test", port, 0, "denied", `http://secret.corp.test:${port} is denied by network.deny entry "secret.corp.test"`],
        ["open.corp.test", port, 0, "allowed", `127.0.0.1 is named in network.allow ("127.0.0.1:${port}")`],
        ["127.0.0.1", port, 0, "allowed", `127.0.0.1 is named in network.allow ("127.0.0.1:${port}")`],
        ["127.0.0.1", otherPort, 1, "denied", `http://127.0.0.1:${otherPort} is denied by network.deny entry "127.0.0.1:${otherPort}"`],
        ["app.test", otherPort, 0, "denied", `app.test resolves to 127.0.0.1, which is denied by network.deny entry "127.0.0.1:${otherPort}"`],
      ],
    );
  });

  it("a sandbox without network has an empty log", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    assert.deepEqual(sb.network.log(), []);
    assert.equal(typeof sb.network.watch(() => undefined), "function");
  });

  it("over HTTP: GET /sandboxes/{id}/network/log and agentbox_network_requests_total{decision}", async () => {
    const metrics = new ServerMetrics(() => 0, () => 0);
    const registry = new SandboxRegistry({ maxSandboxes: 2, maxHeavySandboxes: 1, maxQueue: 2, queueTimeoutMs: 5000, maxConcurrentStarts: 1 }, metrics);
    const app = createApp({ keys: KeyRing.none(), registry, metrics, version: "0", maxJsonBytes: 1 << 20, maxUploadBytes: 1 << 20, mountRoots: [], netAllow: [`127.0.0.1:${port}`], log: () => undefined });
    try {
      const json = { "content-type": "application/json" };
      const created = await app.request("/sandboxes", { method: "POST", headers: json, body: JSON.stringify({ language: "javascript", network: { allow: [`127.0.0.1:${port}`] } }) });
      assert.equal(created.status, 201, await created.clone().text());
      const { id } = (await created.json()) as { id: string };
      const code = `const a = await fetch("http://127.0.0.1:${port}/json"); let b; try { await fetch("http://127.0.0.1:${otherPort}/"); } catch (e) { b = e.code } [a.status, b]`;
      const ran = await app.request(`/sandboxes/${id}/run`, { method: "POST", headers: json, body: JSON.stringify({ code }) });
      assert.equal(((await ran.json()) as { value: string }).value, '[200,"NETWORK_DENIED"]');
      const res = await app.request(`/sandboxes/${id}/network/log`);
      assert.equal(res.status, 200);
      const { entries } = (await res.json()) as { entries: NetworkLogEntry[] };
      assert.deepEqual(
        entries.map((e) => [e.port, e.decision]),
        [
          [port, "allowed"],
          [otherPort, "denied"],
        ],
      );
      const text = await (await app.request("/metrics")).text();
      assert.match(text, /agentbox_network_requests_total\{decision="allowed"\} 1\n/);
      assert.match(text, /agentbox_network_requests_total\{decision="denied"\} 1\n/);
      assert.equal((await app.request("/sandboxes/sb_none/network/log")).status, 404);
    } finally {
      await registry.closeAll();
    }
  });
});
