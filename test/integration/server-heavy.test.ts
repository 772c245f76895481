// The HTTP API with heavy-tier (gVisor) sandboxes, for real: commands (JSON and Server-Sent
// Events), limits the sandbox survives, per-key time quota, the heavy cap beside the global one,
// and that deleting a sandbox leaves no container, cgroup or state dir behind.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KeyRing, startServer, type RunningServer } from "../../src/server/index.js";
import "../helpers.js";
import { ensureImage, leftovers, skipHeavy, waitFor } from "../heavy.js";
import { heavyBoxesOf } from "../server-helpers.js";

const KEY = "heavy-key-0123456789abcdef";

async function api(base: string, method: string, path: string, json?: unknown) {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" }, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await res.text();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const body: any = text && (res.headers.get("content-type") ?? "").includes("json") ? JSON.parse(text) : undefined;
  return { status: res.status, json: body, text, headers: res.headers };
}

/** POST and collect a Server-Sent Events answer: each event with when it arrived. */
async function events(base: string, path: string, json: unknown): Promise<{ event: string; data: unknown; at: number }[]> {
  const res = await fetch(base + path, { method: "POST", headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" }, body: JSON.stringify(json) });
  assert.equal(res.status, 200);
  const out: { event: string; data: unknown; at: number }[] = [];
  const t0 = performance.now();
  let buf = "";
  const dec = new TextDecoder();
  for await (const chunk of res.body!) {
    buf += dec.decode(chunk as Uint8Array, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      out.push({ event: /^event: (.*)$/m.exec(block)?.[1] ?? "message", data: JSON.parse(/^data: (.*)$/m.exec(block)![1]!) as unknown, at: performance.now() - t0 });
    }
  }
  return out;
}

describe("HTTP API: heavy tier (gVisor)", { skip: skipHeavy }, () => {
  let srv: RunningServer;
  let id: string;

  before(async () => {
    await ensureImage();
    const keys = KeyRing.fromEntries([{ name: "heavy", key: KEY, maxSandboxes: 4, maxRunMs: 20_000 }]);
    srv = await startServer({ port: 0, keys, poolSize: 0, maxHeavySandboxes: 1, queueTimeoutMs: 400, log: () => undefined });
    const c = await api(srv.url, "POST", "/sandboxes", { tier: "heavy", limits: { memoryMb: 256 } });
    assert.equal(c.status, 201, c.text);
    assert.equal(c.json.tier, "heavy");
    id = c.json.id;
  });
  after(async () => {
    await srv?.close();
  });

  it("POST /commands returns exit code and output; argv, cwd, env, stdin; shares files with runCode", async () => {
    const r = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "echo hi | tr a-z A-Z; echo oops >&2; exit 3" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.exitCode, 3);
    assert.equal(r.json.stdout, "HI\n");
    assert.equal(r.json.stderr, "oops\n");
    assert.equal(typeof r.json.durationMs, "number");
    assert.equal(r.json.limitHit, undefined);
    const argv = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: ["sh", "-c", 'printf "%s|" "$(pwd)" "$X"; wc -c'], cwd: "/tmp", env: { X: "x1" }, stdinBase64: Buffer.from([0, 1, 255]).toString("base64") });
    assert.equal(argv.json.stdout.replace(/\s+/g, " "), "/tmp|x1|3 ");
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "cat", stdin: "héllo" })).json.stdout, "héllo");
    assert.equal((await fetch(`${srv.url}/sandboxes/${id}/files?path=/home/user/in.txt`, { method: "PUT", headers: { authorization: `Bearer ${KEY}` }, body: "from http" })).status, 204);
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "cat in.txt > out.txt; python3 -c 'print(6*7)'" })).json.stdout, "42\n");
    const run = await api(srv.url, "POST", `/sandboxes/${id}/run`, { code: "open('/home/user/out.txt').read()" });
    assert.equal(run.json.value, "'from http'");
  });

  it("a heavy sandbox's network is the operator's to grant, as a nano one's: none here, so a grant asked for is a 400", async () => {
    const r = await api(srv.url, "POST", "/sandboxes", { tier: "heavy", network: { allow: ["pypi.org"] } });
    assert.equal(r.status, 400, r.text);
    assert.match(r.json.error.message, /network: this server grants no network access \(start it with --allow-net HOST\)/);
  });

  it("streams a command's output as Server-Sent Events while it runs, then the result", async () => {
    const ev = await events(srv.url, `/sandboxes/${id}/commands/stream`, { cmd: "echo first; sleep 0.6; echo err >&2; echo last" });
    assert.equal(ev.at(-1)!.event, "result");
    assert.deepEqual(ev.filter((e) => e.event === "stderr").map((e) => e.data), ["err\n"]);
    assert.equal(ev[0]!.event, "stdout");
    assert.equal(ev[0]!.data, "first\n");
    const result = ev.at(-1)!.data as { exitCode: number; stdout: string };
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, "first\nlast\n");
    assert.ok(ev.at(-1)!.at - ev[0]!.at > 400, `first chunk at ${ev[0]!.at} ms, result at ${ev.at(-1)!.at} ms`);
  });

  it("a timeout kills the command: a result with limitHit and the output so far; the sandbox lives on; quotas bound timeoutMs", async () => {
    const t0 = performance.now();
    const r = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "echo before; sleep 30", timeoutMs: 500 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.limitHit, "timeoutMs");
    assert.equal(r.json.exitCode, 137);
    assert.equal(r.json.signal, "SIGKILL");
    assert.equal(r.json.stdout, "before\n");
    assert.ok(performance.now() - t0 < 5000);
    const ev = await events(srv.url, `/sandboxes/${id}/commands/stream`, { cmd: "sleep 30", timeoutMs: 300 });
    assert.equal((ev.at(-1)!.data as { limitHit: string }).limitHit, "timeoutMs");
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "echo alive" })).json.stdout, "alive\n");
    const over = await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "true", timeoutMs: 25_000 });
    assert.equal(over.status, 400);
    assert.match(over.json.error.message, /timeoutMs: 25000 is over this API key's quota of 20000 \(maxRunMs\)/);
    const m = await api(srv.url, "GET", "/metrics");
    assert.match(m.text, /agentbox_commands_total\{outcome="limit"\} 2/);
    assert.match(m.text, /agentbox_commands_total\{outcome="nonzero"\} 1/);
    assert.match(m.text, /agentbox_heavy_sandboxes_live 1/);
  });

  it("a client that drops a command's stream kills the command; the sandbox stays usable", async () => {
    const ac = new AbortController();
    const res = await fetch(`${srv.url}/sandboxes/${id}/commands/stream`, { method: "POST", headers: { authorization: `Bearer ${KEY}` }, body: JSON.stringify({ cmd: "sleep 15" }), signal: ac.signal });
    assert.equal(res.status, 200);
    setTimeout(() => ac.abort(), 200);
    await assert.rejects(async () => {
      for await (const _ of res.body!) void _;
    });
    const t0 = performance.now();
    assert.equal((await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "echo next" })).json.stdout, "next\n");
    assert.ok(performance.now() - t0 < 5000, "the dropped command was killed, not left to run 15 s");
  });

  it("heavy sandboxes have their own cap: past it a heavy create waits, then 429; nano creates are not held up", async () => {
    const t0 = performance.now();
    const second = await api(srv.url, "POST", "/sandboxes", { tier: "heavy" });
    assert.equal(second.status, 429, second.text);
    assert.equal(second.json.error.code, "CAPACITY");
    assert.match(second.json.error.message, /1 live heavy-tier sandboxes/);
    assert.ok(performance.now() - t0 >= 350);
    const nano = await api(srv.url, "POST", "/sandboxes", {});
    assert.equal(nano.status, 201);
    assert.equal((await api(srv.url, "GET", "/healthz")).json.heavySandboxes, 1);
    await api(srv.url, "DELETE", `/sandboxes/${nano.json.id}`);
  });

  it("DELETE removes the container, its processes, cgroups and state dir", async () => {
    await api(srv.url, "POST", `/sandboxes/${id}/commands`, { cmd: "sleep 100 & true" });
    const boxes = heavyBoxesOf(process.pid);
    assert.equal(boxes.length, 1);
    assert.ok(boxes[0]!.cgroupDirs.length > 0);
    assert.equal((await api(srv.url, "DELETE", `/sandboxes/${id}`)).status, 204);
    assert.ok(await waitFor(() => leftovers(boxes[0]!).processes.length === 0));
    assert.deepEqual(leftovers(boxes[0]!), { processes: [], dir: false, cgroups: [] });
    // The heavy slot is free again.
    const again = await api(srv.url, "POST", "/sandboxes", { tier: "heavy" });
    assert.equal(again.status, 201, again.text);
    await api(srv.url, "DELETE", `/sandboxes/${again.json.id}`);
  });
});
