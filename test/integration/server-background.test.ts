// The HTTP API's background commands with a heavy-tier (gVisor) sandbox, for real: POST
// /commands with background: true answers 202 with the pid at once; the command is listed, serves
// a foreground command while it runs, shows its output so far, is waited for and killed by pid;
// ended ones keep their result; deleting the sandbox ends a wait with 410.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KeyRing, startServer, type RunningServer } from "../../src/server/index.js";
import "../helpers.js";
import { ensureImage, skipHeavy, waitFor } from "../heavy.js";

const KEY = "bg-key-0123456789abcdef";

async function api(base: string, method: string, path: string, json?: unknown) {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" }, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await res.text();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const body: any = text && (res.headers.get("content-type") ?? "").includes("json") ? JSON.parse(text) : undefined;
  return { status: res.status, json: body, text };
}

describe("HTTP API: background commands (gVisor)", { skip: skipHeavy }, () => {
  let srv: RunningServer;
  let id: string;

  before(async () => {
    await ensureImage();
    const keys = KeyRing.fromEntries([{ name: "bg", key: KEY, maxSandboxes: 4, maxRunMs: 60_000 }]);
    srv = await startServer({ port: 0, keys, poolSize: 0, log: () => undefined });
    const c = await api(srv.url, "POST", "/sandboxes", { tier: "heavy", limits: { memoryMb: 256 } });
    assert.equal(c.status, 201, c.text);
    id = c.json.id;
  });
  after(async () => {
    await srv?.close();
  });

  it("background: 202 with the pid; listed; serves a foreground command; status, wait, kill", async () => {
    const put = await fetch(`${srv.url}/sandboxes/${id}/files?path=/tmp/www/hi.txt`, { method: "PUT", headers: { authorization: `Bearer ${KEY}` }, body: "hi over http\n" });
    assert.equal(put.status, 204);
    const cmd = "exec python3 -u -m http.server 8766 --bind 127.0.0.1";
    const s = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd, cwd: "/tmp/www", background: true });
    assert.equal(s.status, 202, s.text);
    const pid = s.json.pid as number;
    assert.ok(Number.isInteger(pid) && pid > 0);
    assert.equal(s.json.cmd, cmd);
    assert.deepEqual(s.json.argv, ["/bin/bash", "-c", cmd]);
    assert.equal(s.json.cwd, "/tmp/www");
    assert.ok(!Number.isNaN(Date.parse(s.json.startedAt)));

    const list = await api(srv.url, "GET", `/sandboxes/${id}/commands`);
    assert.equal(list.status, 200);
    assert.deepEqual(list.json.commands.map((c: { pid: number }) => c.pid), [pid]);

    const fetchIt = `python3 -c "
import time, urllib.request
for i in range(100):
    try:
        print(urllib.request.urlopen('http://127.0.0.1:8766/hi.txt', timeout=10).read().decode(), end=''); break
    except OSError: time.sleep(0.2)
"`;
    const fg = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: fetchIt });
    assert.equal(fg.status, 200, fg.text);
    assert.equal(fg.json.stdout, "hi over http\n");

    let st = await api(srv.url, "GET", `/sandboxes/${id}/commands/${pid}`);
    assert.equal(st.status, 200, st.text);
    assert.equal(st.json.status, "running");
    assert.match(st.json.stdout, /Serving HTTP on 127\.0\.0\.1 port 8766/);
    // http.server logs the request on stderr just after answering it.
    let stderr = "";
    const poll = setInterval(() => void api(srv.url, "GET", `/sandboxes/${id}/commands/${pid}`).then((r) => (stderr = r.json.stderr as string)), 100);
    const logged = await waitFor(() => /GET \/hi\.txt/.test(stderr));
    clearInterval(poll);
    assert.ok(logged, stderr);

    const waiting = api(srv.url, "GET", `/sandboxes/${id}/commands/${pid}/wait`);
    const k = await api(srv.url, "POST", `/sandboxes/${id}/commands/${pid}/kill`);
    assert.equal(k.status, 200, k.text);
    assert.deepEqual(k.json, { killed: true });
    const w = await waiting;
    assert.equal(w.status, 200, w.text);
    assert.equal(w.json.exitCode, 137);
    assert.equal(w.json.signal, "SIGKILL");
    assert.match(w.json.stdout, /Serving HTTP/);

    assert.deepEqual((await api(srv.url, "GET", `/sandboxes/${id}/commands`)).json, { commands: [] });
    st = await api(srv.url, "GET", `/sandboxes/${id}/commands/${pid}`);
    assert.equal(st.json.status, "exited");
    assert.equal(st.json.exitCode, 137);
    assert.deepEqual((await api(srv.url, "POST", `/sandboxes/${id}/commands/${pid}/kill`, { signal: "TERM" })).json, { killed: false });
  });

  it("a short one: wait gives its exit code; TERM by request; unknown pids are 404; stream refuses background", async () => {
    const s = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "echo out; echo err >&2; exit 4", background: true });
    assert.equal(s.status, 202, s.text);
    const w = await api(srv.url, "GET", `/sandboxes/${id}/commands/${s.json.pid}/wait`);
    assert.deepEqual({ ...w.json, durationMs: 0 }, { exitCode: 4, stdout: "out\n", stderr: "err\n", durationMs: 0 });

    const t = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "trap 'echo term; exit 5' TERM; echo ready; while true; do sleep 0.1; done", background: true });
    // The trap is set once it says so.
    for (let i = 0; i < 100 && (await api(srv.url, "GET", `/sandboxes/${id}/commands/${t.json.pid}`)).json.stdout !== "ready\n"; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/commands/${t.json.pid}/kill`, { signal: "TERM" })).json.killed, true);
    const tw = await api(srv.url, "GET", `/sandboxes/${id}/commands/${t.json.pid}/wait`);
    assert.equal(tw.json.exitCode, 5);
    assert.equal(tw.json.stdout, "ready\nterm\n");

    for (const p of ["999999", "abc", "0"]) {
      assert.equal((await api(srv.url, "GET", `/sandboxes/${id}/commands/${p}`)).status, 404);
      assert.equal((await api(srv.url, "GET", `/sandboxes/${id}/commands/${p}/wait`)).status, 404);
    }
    const bad = await api(srv.url, "POST", `/sandboxes/${id}/commands/1/kill`, { signal: "HUP" });
    assert.equal(bad.status, 400);
    const stream = await api(srv.url, "POST", `/sandboxes/${id}/commands/stream`, { cmd: "true", background: true });
    assert.equal(stream.status, 400);
    assert.match(stream.text, /background/);
    const missing = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: ["/no/such/binary"], background: true });
    assert.equal(missing.status, 400);
    assert.match(missing.json.error.message, /ENOENT/);
  });

  it("deleting the sandbox ends a wait with 410; a nano sandbox refuses background commands (501)", async () => {
    const c = await api(srv.url, "POST", "/sandboxes", { tier: "heavy", limits: { memoryMb: 256 } });
    const sid = c.json.id as string;
    const s = await api(srv.url, "POST", `/sandboxes/${sid}/commands`, { cmd: "sleep 1000", background: true });
    assert.equal(s.status, 202, s.text);
    const waiting = api(srv.url, "GET", `/sandboxes/${sid}/commands/${s.json.pid}/wait`);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await api(srv.url, "DELETE", `/sandboxes/${sid}`)).status, 204);
    const w = await waiting;
    assert.equal(w.status, 410, w.text);
    assert.equal(w.json.error.code, "SANDBOX_CLOSED");

    const n = await api(srv.url, "POST", "/sandboxes", { tier: "nano" });
    const r = await api(srv.url, "POST", `/sandboxes/${n.json.id}/commands`, { cmd: "sleep 1", background: true });
    assert.equal(r.status, 501, r.text);
    assert.deepEqual((await api(srv.url, "GET", `/sandboxes/${n.json.id}/commands`)).json, { commands: [] });
  });
});
