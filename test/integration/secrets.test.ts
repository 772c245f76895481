// Network secrets through real nano sandboxes (JavaScript fetch, Python urllib): the guest holds a
// placeholder, the secret's host receives the value (Authorization header, ?key= query), any other
// allowed host receives the placeholder, and nothing that comes back (an echoing server's headers
// and body, errors, the network log, the sandbox's options) carries the value. The test server
// listens on 127.0.0.1; "secret.test" and "other.test" map to it in the host's (mocked) resolver.
import assert from "node:assert/strict";
import dns from "node:dns/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it, mock } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { Sandbox } from "../../src/index.js";
import { createMcpServer } from "../../src/mcp/index.js";
import { createServer, KeyRing } from "../../src/server/index.js";
import "../helpers.js";

const VALUE = "sk-live-0123456789abcdef/+=&"; // needs escaping in a query: checks the encoding too
const FORMS = [VALUE, encodeURIComponent(VALUE), new URLSearchParams({ v: VALUE }).toString().slice(2)];
const leaks = (s: string) => FORMS.some((f) => s.includes(f));

let server: http.Server;
let port: number;
const seen: { host: string; authorization: string | null; key: string | null }[] = [];

before(async () => {
  server = http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    const got = { host: String(req.headers.host), authorization: req.headers.authorization ?? null, key: u.searchParams.get("key") };
    seen.push(got);
    if (u.pathname === "/echo") return res.writeHead(200, { "content-type": "application/json", "x-echo-auth": String(req.headers.authorization) }).end(JSON.stringify(got));
    if (u.pathname === "/hang-up") return req.socket.destroy();
    res.writeHead(404).end("no");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

function mapNames(t: { after: (fn: () => void) => void }): void {
  const real = dns.lookup.bind(dns);
  const m = mock.method(dns, "lookup", async (host: string, options: object) =>
    host === "secret.test" || host === "other.test" ? [{ address: "127.0.0.1", family: 4 }] : real(host, options as { all: true }),
  );
  t.after(() => m.mock.restore());
}

const network = () => ({
  allow: [`secret.test:${port}`, `other.test:${port}`, `127.0.0.1:${port}`],
  secrets: [{ name: "TOKEN", value: VALUE, hosts: [`secret.test:${port}`] }],
});

describe("network secrets: nano sandboxes", () => {
  it("JavaScript fetch: the value goes to the secret's host only, never back to the guest", async (t) => {
    mapNames(t);
    await using sb = await Sandbox.create({ language: "javascript", network: network() });
    const p = sb.network.secretPlaceholders().TOKEN!;
    assert.match(p, /^agentbox-secret-TOKEN-[0-9a-f]{32}$/);
    seen.length = 0;
    const code = (host: string) => `
      const r = await fetch("http://${host}:${port}/echo?key=${p}", { headers: { Authorization: "Bearer ${p}" } });
      ({ status: r.status, echoed: r.headers.get("x-echo-auth"), body: await r.json(), url: r.url })`;
    const secret = await sb.runCode(code("secret.test"));
    assert.equal(secret.error, undefined, secret.error?.traceback);
    assert.deepEqual(seen[0], { host: `secret.test:${port}`, authorization: `Bearer ${VALUE}`, key: VALUE });
    const shown = JSON.parse(secret.value!) as { echoed: string; body: { authorization: string; key: string }; url: string };
    assert.equal(shown.echoed, `Bearer ${p}`);
    assert.deepEqual(shown.body, { host: `secret.test:${port}`, authorization: `Bearer ${p}`, key: p });
    const other = await sb.runCode(code("other.test"));
    assert.equal(other.error, undefined, other.error?.traceback);
    assert.deepEqual(seen[1], { host: `other.test:${port}`, authorization: `Bearer ${p}`, key: p });
    const failed = await sb.runCode(`try { await fetch("http://secret.test:${port}/hang-up?key=${p}", { headers: { Authorization: "Bearer ${p}" } }) } catch (e) { String(e) }`);
    assert.match(failed.value ?? "", /TypeError/);
    const everything = JSON.stringify([secret, other, failed, sb.network.log(), sb.options]);
    assert.equal(leaks(everything), false, "no value in results, errors, the log or the options");
  });

  it("Python urllib: the env holds the placeholder; the value goes to the secret's host only", async (t) => {
    mapNames(t);
    await using sb = await Sandbox.create({ language: "python", env: { OTHER: "x" }, network: network() });
    const p = sb.network.secretPlaceholders().TOKEN!;
    seen.length = 0;
    const r = await sb.runCode(
      [
        "import json, os, urllib.request, urllib.error",
        "tok = os.environ['TOKEN']",
        "out = {'env': tok, 'other': os.environ['OTHER']}",
        "for host in ('secret.test', 'other.test'):",
        `    req = urllib.request.Request(f"http://{host}:${port}/echo?key={tok}", headers={'Authorization': 'Bearer ' + tok})`,
        "    with urllib.request.urlopen(req) as res:",
        "        out[host] = {'echoed': res.headers['x-echo-auth'], 'body': json.loads(res.read())}",
        "try:",
        `    urllib.request.urlopen(urllib.request.Request(f"http://secret.test:${port}/hang-up?key={tok}", headers={'Authorization': 'Bearer ' + tok}))`,
        "except urllib.error.URLError as e:",
        "    out['error'] = str(e.reason)",
        "print(json.dumps(out))",
      ].join("\n"),
    );
    assert.equal(r.error, undefined, r.error?.traceback);
    const out = JSON.parse(r.stdout) as Record<string, { echoed: string; body: unknown }> & { env: string; other: string; error: string };
    assert.equal(out.env, p, "the guest's env shows the placeholder");
    assert.equal(out.other, "x");
    assert.deepEqual(seen[0], { host: `secret.test:${port}`, authorization: `Bearer ${VALUE}`, key: VALUE });
    assert.deepEqual(seen[1], { host: `other.test:${port}`, authorization: `Bearer ${p}`, key: p });
    assert.equal(out["secret.test"]!.echoed, `Bearer ${p}`);
    assert.deepEqual(out["secret.test"]!.body, { host: `secret.test:${port}`, authorization: `Bearer ${p}`, key: p });
    assert.ok(out.error, "the hang-up is an error the guest sees");
    assert.equal(leaks(JSON.stringify([r, sb.network.log(), sb.options])), false);
  });

  it("an env entry named like a secret is refused at create", async () => {
    await assert.rejects(Sandbox.create({ language: "python", env: { TOKEN: "mine" }, network: network() }), /env\.TOKEN: is also the name of network\.secrets\.0/);
  });
});

describe("network secrets: the HTTP server", () => {
  it("create, get, list, run and the network log never show the value; a bad secret's error does not quote it", async () => {
    const srv = await createServer({ keys: KeyRing.none(), poolSize: 0, netAllow: [`secret.test:${port}`, `other.test:${port}`, `127.0.0.1:${port}`], log: () => undefined });
    try {
      const call = async (method: string, path: string, json?: unknown) => {
        const r = await srv.app.request(path, { method, headers: { "content-type": "application/json" }, ...(json !== undefined ? { body: JSON.stringify(json) } : {}) });
        return { status: r.status, text: await r.text() };
      };
      const created = await call("POST", "/sandboxes", { language: "python", network: network() });
      assert.equal(created.status, 201, created.text);
      const id = (JSON.parse(created.text) as { id: string }).id;
      const texts = [created.text];
      texts.push((await call("GET", `/sandboxes/${id}`)).text, (await call("GET", "/sandboxes")).text);
      const run = await call("POST", `/sandboxes/${id}/run`, { code: "import os\nprint(os.environ['TOKEN'])" });
      assert.equal(run.status, 200, run.text);
      assert.match(run.text, /agentbox-secret-TOKEN-[0-9a-f]{32}/);
      const log = await call("GET", `/sandboxes/${id}/network/log`);
      assert.equal(log.status, 200, log.text);
      texts.push(run.text, log.text);
      assert.equal(leaks(texts.join("\n")), false);
      await call("DELETE", `/sandboxes/${id}`);
      const bad = await call("POST", "/sandboxes", { language: "python", network: { ...network(), secrets: [{ name: "TOKEN", value: `${VALUE}\r\n`, hosts: ["secret.test"] }] } });
      assert.equal(bad.status, 400);
      assert.match(bad.text, /network\.secrets\.0\.value/);
      assert.equal(leaks(bad.text), false);
    } finally {
      await srv.close();
    }
  });
});

describe("network secrets: the MCP server", () => {
  it("tools and results show the placeholder, never the value", async (t) => {
    mapNames(t);
    const mcp = createMcpServer({ sandbox: { network: network() } });
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    await mcp.server.connect(serverSide);
    const client = new Client({ name: "agentbox-test", version: "0.0.0" });
    await client.connect(clientSide);
    try {
      const tools = JSON.stringify(await client.listTools());
      const code = [
        "import os, urllib.request",
        "tok = os.environ['TOKEN']",
        `req = urllib.request.Request(f"http://secret.test:${port}/echo?key={tok}", headers={'Authorization': 'Bearer ' + tok})`,
        "print(tok, urllib.request.urlopen(req).read().decode())",
      ].join("\n");
      seen.length = 0;
      const r = (await client.callTool({ name: "run_python", arguments: { code } })) as CallToolResult;
      const text = JSON.stringify(r);
      assert.match(text, /agentbox-secret-TOKEN-[0-9a-f]{32}/);
      assert.equal(seen[0]?.authorization, `Bearer ${VALUE}`, "the host still sent the value");
      assert.equal(leaks(tools + text), false);
    } finally {
      await client.close();
      await mcp.close();
    }
  });
});
