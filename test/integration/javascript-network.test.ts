// The network grant of JavaScript sandboxes: a guest `fetch` that the host performs for it, only
// to hosts in `network.allow`, with every redirect hop checked and the grant's caps enforced. The
// test's HTTP server listens on 127.0.0.1; the worker itself has no network.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { InvalidOptionsError, Sandbox } from "../../src/index.js";
import { checkUrl, parseAllowEntry, parseAllowList } from "../../src/policy/network.js";
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

  it("the option is validated up front and only JS/TS sandboxes take it", async () => {
    await assert.rejects(Sandbox.create({ language: "javascript", network: { allow: ["http://x/y"] } }), (e: unknown) => e instanceof InvalidOptionsError && /network\.allow\.0/.test(e.message));
    await assert.rejects(Sandbox.create({ language: "javascript", network: { allow: [] } }), InvalidOptionsError);
    await assert.rejects(Sandbox.create({ language: "python", network: { allow: ["example.com"] } }), (e: unknown) => e instanceof InvalidOptionsError && /javascript/.test(e.message));
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
