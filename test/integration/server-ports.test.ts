// The HTTP API's reverse proxy to exposed ports of a heavy-tier (gVisor) sandbox, for real: any
// method, the rest of the path and the query, headers (hop-by-hop and our Authorization dropped,
// forwarding headers set), a streamed answer; WebSocket upgrades through the `ws` client; auth as
// every route (no key 401, another key's sandbox 404); a port nothing listens on is a clear 502;
// a nano sandbox is refused; closing the port or deleting the sandbox cuts open connections.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import { KeyRing, startServer, type RunningServer } from "../../src/server/index.js";
import "../helpers.js";
import { ensureImage, skipHeavy } from "../heavy.js";
import { GUEST_APP } from "../ports.js";

const KEY = "ports-key-one-0123456789abcdef";
const KEY2 = "ports-key-two-0123456789abcdef";

/** `key` null: no Authorization header. */
async function api(base: string, method: string, path: string, json?: unknown, key: string | null = KEY) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key !== null) headers.authorization = `Bearer ${key}`;
  const res = await fetch(base + path, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await res.text();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const body: any = text && (res.headers.get("content-type") ?? "").includes("json") ? JSON.parse(text) : undefined;
  return { status: res.status, json: body, text, headers: res.headers };
}

/** Open a WebSocket; resolves with it and its first message, or rejects with the HTTP status it was refused with. */
function openWs(url: string, key?: string): Promise<{ ws: WebSocket; first: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: key === undefined ? {} : { authorization: `Bearer ${key}` } });
    ws.once("message", (d) => resolve({ ws, first: String(d) }));
    ws.once("unexpected-response", (_req, res) => reject(Object.assign(new Error(`refused with ${res.statusCode}`), { status: res.statusCode })));
    ws.once("error", reject);
  });
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise((resolve) => ws.once("message", (data, binary) => resolve({ data: data as Buffer, binary })));
}

describe("HTTP API: exposed ports (gVisor)", { skip: skipHeavy }, () => {
  let srv: RunningServer;
  let id: string;
  let base: string;

  /** Upload the guest app and start it in the background (its own session) through the API. */
  async function startApp(mode: string, port: number): Promise<void> {
    const up = await fetch(`${srv.url}/sandboxes/${id}/files?path=/tmp/guest_app.py`, { method: "PUT", headers: { authorization: `Bearer ${KEY}` }, body: GUEST_APP });
    assert.equal(up.status, 204);
    const launch = "import subprocess, sys; subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)";
    const r = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: ["python3", "-c", launch, "python3", "/tmp/guest_app.py", mode, String(port)] });
    assert.equal(r.status, 200, r.text);
    // Ready once the port accepts: a 502 (nothing listens yet) turns into an answer.
    const wait = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: ["python3", "-c", `import socket, time\nfor _ in range(100):\n    try:\n        socket.create_connection(("127.0.0.1", ${port}), 1).close(); break\n    except OSError:\n        time.sleep(0.1)`] });
    assert.equal(wait.status, 200, wait.text);
  }

  before(async () => {
    await ensureImage();
    const keys = KeyRing.fromEntries([
      { name: "one", key: KEY, maxSandboxes: 4, maxRunMs: 20_000 },
      { name: "two", key: KEY2, maxSandboxes: 2 },
    ]);
    srv = await startServer({ port: 0, keys, poolSize: 0, log: () => undefined });
    const c = await api(srv.url, "POST", "/sandboxes", { tier: "heavy", limits: { memoryMb: 256 } });
    assert.equal(c.status, 201, c.text);
    id = c.json.id;
    await startApp("http", 8000);
    await startApp("ws", 8001);
    base = `${srv.url}/sandboxes/${id}/ports/8000/`;
  });
  after(async () => {
    await srv?.close();
  });

  it("POST /ports answers the proxy URL (idempotent); GET /ports lists; the proxy passes method, path, query, headers and body", async () => {
    const e = await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 8000 });
    assert.equal(e.status, 201, e.text);
    assert.deepEqual(e.json, { port: 8000, url: base });
    assert.deepEqual((await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 8000 })).json, e.json);
    assert.deepEqual((await api(srv.url, "GET", `/sandboxes/${id}/ports`)).json, { ports: [{ port: 8000, url: base }] });

    // node:http, as fetch() will not send a Connection header naming another.
    const g = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http
        .get(`${base}deep/path%20x?q=1&r=two`, { headers: { authorization: `Bearer ${KEY}`, "x-custom": "kept", "x-forwarded-host": "spoofed", connection: "keep-alive, x-drop", "x-drop": "hop" }, agent: false }, resolve)
        .on("error", reject),
    );
    let text = "";
    for await (const chunk of g) text += String(chunk);
    assert.equal(g.statusCode, 200, text);
    assert.equal(g.headers["x-guest"], "yes", "the guest app's headers come back");
    const seen = JSON.parse(text) as { method: string; path: string; headers: Record<string, string>; body: string };
    assert.equal(seen.method, "GET");
    assert.equal(seen.path, "/deep/path%20x?q=1&r=two");
    const h = Object.fromEntries(Object.entries(seen.headers).map(([k, v]) => [k.toLowerCase(), v]));
    assert.equal(h.authorization, undefined, "the API key never reaches the guest");
    assert.equal(h["x-custom"], "kept");
    assert.equal(h["x-drop"], undefined, "a header the Connection header names is hop-by-hop");
    assert.equal(h.host, "127.0.0.1:8000");
    assert.equal(h["x-forwarded-prefix"], `/sandboxes/${id}/ports/8000`);
    assert.equal(h["x-forwarded-host"], new URL(srv.url).host, "forwarding headers are the server's, not the client's");

    const p = await fetch(base, { method: "POST", headers: { authorization: `Bearer ${KEY}`, "content-type": "text/plain" }, body: "the body" });
    assert.equal(p.status, 201);
    const posted = (await p.json()) as { method: string; path: string; body: string };
    assert.deepEqual([posted.method, posted.path, posted.body], ["POST", "/", "the body"]);
    for (const method of ["PUT", "PATCH", "DELETE"]) {
      const r = await fetch(`${base}x`, { method, headers: { authorization: `Bearer ${KEY}` }, body: method === "DELETE" ? undefined : "b" });
      assert.equal(((await r.json()) as { method: string }).method, method);
    }
    const big = await fetch(`${base}big`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(big.status, 200);
    assert.equal((await big.arrayBuffer()).byteLength, 32 * 65536, "a 2 MiB answer streams through whole");
  });

  it("auth as every route: no key 401, another key's sandbox 404; a port not exposed 404; nothing listening 502; a bad port 400", async () => {
    await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 8000 });
    assert.equal((await api(srv.url, "GET", `/sandboxes/${id}/ports/8000/`, undefined, null)).status, 401);
    assert.equal((await api(srv.url, "GET", `/sandboxes/${id}/ports/8000/`, undefined, KEY2)).status, 404);
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 8000 }, KEY2)).status, 404);
    const notExposed = await api(srv.url, "GET", `/sandboxes/${id}/ports/8002/`);
    assert.equal(notExposed.status, 404);
    assert.match(notExposed.json.error.message, /port 8002 .* is not exposed/);
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 9 })).status, 201);
    const refused = await api(srv.url, "GET", `/sandboxes/${id}/ports/9/`);
    assert.equal(refused.status, 502);
    assert.equal(refused.json.error.code, "PORT_UNREACHABLE");
    assert.equal(refused.json.error.port, 9);
    assert.match(refused.json.error.message, /cannot connect to port 9 in the sandbox \(ECONNREFUSED/);
    assert.equal((await api(srv.url, "GET", `/sandboxes/${id}/ports/70000/`)).status, 400);
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 0 })).status, 400);
    // The sandbox is unharmed.
    assert.equal((await api(srv.url, "GET", `/sandboxes/${id}/ports/8000/ok`)).status, 200);
  });

  it("WebSocket upgrades: authenticated the same way, path and query rewritten, no Authorization to the guest, frames echoed", async () => {
    await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 8001 });
    const wsUrl = `${srv.url.replace(/^http/, "ws")}/sandboxes/${id}/ports/8001/chat?room=1`;
    await assert.rejects(openWs(wsUrl), { status: 401 });
    await assert.rejects(openWs(wsUrl, KEY2), { status: 404 });
    await assert.rejects(openWs(`${srv.url.replace(/^http/, "ws")}/sandboxes/${id}/ports/8003/`, KEY), { status: 404 });
    const { ws, first } = await openWs(wsUrl, KEY);
    const req = JSON.parse(first) as { requestLine: string; headers: Record<string, string> };
    assert.equal(req.requestLine, "GET /chat?room=1 HTTP/1.1");
    assert.equal(req.headers.authorization, undefined);
    assert.equal(req.headers.upgrade, "websocket");
    ws.send("hello");
    const m = await nextMessage(ws);
    assert.equal(m.binary, false);
    assert.equal(m.data.toString(), "hello");
    const blob = Buffer.alloc(300_000, 7);
    ws.send(blob);
    const b = await nextMessage(ws);
    assert.equal(b.binary, true);
    assert.ok(b.data.equals(blob), "a 300 KB binary frame is echoed whole");
    const closed = new Promise<number>((r) => ws.once("close", (code) => r(code)));
    ws.close(1000);
    assert.equal(await closed, 1000);
  });

  it("DELETE /ports/{port} cuts open connections and stops the proxy; a nano sandbox is refused (501); deleting the sandbox closes its WebSockets", async () => {
    await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 8001 });
    const wsUrl = `${srv.url.replace(/^http/, "ws")}/sandboxes/${id}/ports/8001/`;
    const { ws } = await openWs(wsUrl, KEY);
    const cut = new Promise((r) => ws.once("close", r));
    assert.equal((await api(srv.url, "DELETE", `/sandboxes/${id}/ports/8001`)).status, 204);
    await cut;
    await assert.rejects(openWs(wsUrl, KEY), { status: 404 });
    assert.deepEqual(
      (await api(srv.url, "GET", `/sandboxes/${id}/ports`)).json.ports.map((p: { port: number }) => p.port),
      [9, 8000],
    );

    const nano = await api(srv.url, "POST", "/sandboxes", { tier: "nano", language: "javascript" });
    assert.equal(nano.status, 201, nano.text);
    const refused = await api(srv.url, "POST", `/sandboxes/${nano.json.id}/ports`, { port: 8000 });
    assert.equal(refused.status, 501);
    assert.equal(refused.json.error.code, "TIER_UNAVAILABLE");

    await api(srv.url, "POST", `/sandboxes/${id}/ports`, { port: 8001 });
    const again = await openWs(wsUrl, KEY);
    const gone = new Promise((r) => again.ws.once("close", r));
    assert.equal((await api(srv.url, "DELETE", `/sandboxes/${id}`)).status, 204);
    await gone;
  });
});
