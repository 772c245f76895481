// The E2B-compatible control plane, driven by E2B's own JavaScript SDK (`e2b`), unchanged: only
// E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY point it at an agentbox server. Nano templates keep
// these fast; the heavy tier's commands, files and code interpreter have their own files
// (e2b-commands, e2b-files, e2b-interpreter).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { AuthenticationError, NotFoundError, RateLimitError, Sandbox, SandboxError, SandboxNotFoundError } from "e2b";
import { fileURLToPath } from "node:url";
import { E2B_KEY, startE2bServer, type E2bServer } from "../e2b-helpers.js";
import { ensureDataImage, skipHeavy } from "../heavy.js";

describe("E2B-compatible API: the control plane through the e2b SDK", () => {
  let srv: E2bServer;
  /** Run code in a sandbox through the native API (the same registry) and return its value. */
  const nativeRun = async (id: string, code: string) => {
    const r = await fetch(`${srv.server.url}/sandboxes/${id}/run`, { method: "POST", headers: { authorization: `Bearer ${E2B_KEY}`, "content-type": "application/json" }, body: JSON.stringify({ code }) });
    return ((await r.json()) as { value?: string }).value;
  };
  before(async () => {
    srv = await startE2bServer();
  });
  after(async () => {
    await srv?.close();
  });

  it("create → getInfo → list by metadata → setTimeout → kill; isRunning follows", async () => {
    const sb = await Sandbox.create("agentbox-python", { metadata: { run: "a1", team: "x" }, timeoutMs: 60_000 });
    assert.match(sb.sandboxId, /^sb_[0-9a-f]{24}$/);
    const info = await sb.getInfo();
    assert.equal(info.sandboxId, sb.sandboxId);
    assert.equal(info.templateId, "agentbox-python");
    assert.deepEqual(info.metadata, { run: "a1", team: "x" });
    assert.equal(info.state, "running");
    assert.equal(info.memoryMB, 256);
    const lifetime = info.endAt.getTime() - info.startedAt.getTime();
    assert.ok(lifetime > 55_000 && lifetime <= 61_000, `lifetime ${lifetime} ms`);
    assert.equal(await sb.isRunning(), true);

    const other = await Sandbox.create("agentbox-javascript", { metadata: { run: "b2" } });
    const mine = await Sandbox.list({ query: { metadata: { run: "a1" } } }).nextItems();
    assert.deepEqual(mine.map((s) => s.sandboxId), [sb.sandboxId]);
    const both = await Sandbox.list().nextItems();
    assert.deepEqual(new Set(both.map((s) => s.sandboxId)), new Set([sb.sandboxId, other.sandboxId]));
    assert.equal(both.find((s) => s.sandboxId === other.sandboxId)?.templateId, "agentbox-javascript");

    await sb.setTimeout(600_000);
    const later = await sb.getInfo();
    assert.ok(later.endAt.getTime() - Date.now() > 590_000, `endAt ${later.endAt.toISOString()}`);

    await sb.kill();
    assert.equal(await sb.isRunning(), false);
    await assert.rejects(Sandbox.getInfo(sb.sandboxId), SandboxNotFoundError);
    assert.equal(await Sandbox.kill(sb.sandboxId), false); // already gone
    assert.equal(await Sandbox.kill(other.sandboxId), true);
    assert.deepEqual(await Sandbox.list().nextItems(), []);
  });

  it("list pages with limit and nextToken; the state filter", async () => {
    const made = [];
    for (let i = 0; i < 3; i++) made.push(await Sandbox.create("agentbox-python", { metadata: { page: "p" } }));
    try {
      const pager = Sandbox.list({ limit: 2, query: { metadata: { page: "p" } } });
      const first = await pager.nextItems();
      assert.equal(first.length, 2);
      assert.equal(pager.hasNext, true);
      const second = await pager.nextItems();
      assert.equal(second.length, 1);
      assert.equal(pager.hasNext, false);
      assert.deepEqual(new Set([...first, ...second].map((s) => s.sandboxId)), new Set(made.map((s) => s.sandboxId)));
      assert.equal((await Sandbox.list({ query: { state: ["paused"] } }).nextItems()).length, 0);
      assert.equal((await Sandbox.list({ query: { state: ["running"], metadata: { page: "p" } } }).nextItems()).length, 3);
    } finally {
      await Promise.all(made.map((s) => s.kill()));
    }
  });

  it("pause keeps the sandbox's state; connect resumes it with a new lifetime", async () => {
    const sb = await Sandbox.create("agentbox-python", { timeoutMs: 60_000 });
    try {
      // The native API runs code in it (the same registry): x lives in its REPL.
      const run = await fetch(`${srv.server.url}/sandboxes/${sb.sandboxId}/run`, {
        method: "POST",
        headers: { authorization: `Bearer ${E2B_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ code: "x = 6 * 7\nx" }),
      });
      assert.equal(((await run.json()) as { value: string }).value, "42");
      assert.equal(await Sandbox.pause(sb.sandboxId), true);
      assert.equal(await Sandbox.pause(sb.sandboxId), false); // already paused: the SDK's false
      assert.equal((await Sandbox.getInfo(sb.sandboxId)).state, "paused");
      assert.deepEqual((await Sandbox.list({ query: { state: ["paused"] } }).nextItems()).map((s) => s.sandboxId), [sb.sandboxId]);

      const back = await Sandbox.connect(sb.sandboxId, { timeoutMs: 120_000 });
      assert.equal(back.sandboxId, sb.sandboxId);
      const info = await back.getInfo();
      assert.equal(info.state, "running");
      assert.ok(info.endAt.getTime() - Date.now() > 110_000);
      const again = await fetch(`${srv.server.url}/sandboxes/${sb.sandboxId}/run`, {
        method: "POST",
        headers: { authorization: `Bearer ${E2B_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ code: "x + 1" }),
      });
      assert.equal(((await again.json()) as { value: string }).value, "43");
    } finally {
      await Sandbox.kill(sb.sandboxId);
    }
  });

  it("snapshots: createSnapshot → Sandbox.create(snapshotId) with the state; listSnapshots; deleteSnapshot", async () => {
    const sb = await Sandbox.create("agentbox-python");
    try {
      assert.equal(await nativeRun(sb.sandboxId, "import random\nstate = ['kept']\nlen(state)"), "1");
      const snap = await sb.createSnapshot({ name: "after-setup" });
      assert.match(snap.snapshotId, /\S/);
      assert.deepEqual(snap.names, ["after-setup"]);
      const listed = await Sandbox.listSnapshots({ sandboxId: sb.sandboxId }).nextItems();
      assert.deepEqual(listed.map((s) => s.snapshotId), [snap.snapshotId]);
      const copy = await Sandbox.create(snap.snapshotId);
      assert.notEqual(copy.sandboxId, sb.sandboxId);
      assert.equal((await copy.getInfo()).templateId, snap.snapshotId);
      assert.equal(await nativeRun(copy.sandboxId, "state[0]"), "'kept'");
      await copy.kill();
      assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true);
      assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false);
      await assert.rejects(Sandbox.create(snap.snapshotId), /404: template .* not found/);
    } finally {
      await sb.kill();
    }
  });

  it("fork: count sandboxes from one checkpoint, each with the state and its own future", async () => {
    const sb = await Sandbox.create("agentbox-python", { metadata: { origin: "yes" } });
    try {
      await nativeRun(sb.sandboxId, "log = ['base']");
      const forks = await sb.fork({ count: 2 });
      assert.equal(forks.length, 2);
      const [a, b] = forks.map((f) => {
        assert.ok(f instanceof Sandbox, String(f));
        return f;
      }) as [Sandbox, Sandbox];
      await nativeRun(a.sandboxId, "log.append('a')");
      assert.equal(await nativeRun(a.sandboxId, "log"), "['base', 'a']");
      assert.equal(await nativeRun(b.sandboxId, "log"), "['base']");
      assert.equal(await nativeRun(sb.sandboxId, "log"), "['base']");
      assert.deepEqual((await a.getInfo()).metadata, { origin: "yes" });
      assert.deepEqual(await Sandbox.listSnapshots().nextItems(), []); // the fork's checkpoint is not kept
      await Promise.all([a.kill(), b.kill()]);
    } finally {
      await sb.kill();
    }
  });

  it("a sandbox the native API created is seen and reached through the E2B API", async () => {
    const res = await fetch(`${srv.server.url}/sandboxes`, {
      method: "POST",
      headers: { authorization: `Bearer ${E2B_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ language: "python" }),
    });
    const { id } = (await res.json()) as { id: string };
    const listed = await Sandbox.list().nextItems();
    assert.equal(listed.find((s) => s.sandboxId === id)?.templateId, "agentbox-python");
    const sb = await Sandbox.connect(id);
    assert.equal(await sb.isRunning(), true);
    await sb.kill();
    assert.equal((await fetch(`${srv.server.url}/sandboxes/${id}`, { headers: { authorization: `Bearer ${E2B_KEY}` } })).status, 404);
  });

  it("the lifetime ends the sandbox: killed at endAt unless extended", async () => {
    const sb = await Sandbox.create("agentbox-python", { timeoutMs: 1500 });
    assert.equal(await sb.isRunning(), true);
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(await sb.isRunning(), false);
    await assert.rejects(sb.getInfo(), SandboxNotFoundError);
  });

  it("in-sandbox traffic needs the sandbox's own access token", async () => {
    const sb = await Sandbox.create("agentbox-python");
    try {
      const health = (token?: string) =>
        fetch(`${srv.env.E2B_SANDBOX_URL}/health`, { headers: { "E2b-Sandbox-Id": sb.sandboxId, "E2b-Sandbox-Port": "49983", ...(token ? { "X-Access-Token": token } : {}) } });
      assert.equal((await health()).status, 401);
      assert.equal((await health("0".repeat(32))).status, 401);
      const other = await Sandbox.create("agentbox-python");
      // Another sandbox's token does not open this one.
      const token = (other as unknown as { envdAccessToken: string }).envdAccessToken;
      assert.match(token, /^[0-9a-f]{32}$/);
      assert.equal((await health(token)).status, 401);
      await other.kill();
      const own = (sb as unknown as { envdAccessToken: string }).envdAccessToken;
      assert.equal((await health(own)).status, 204);
      const unknown = await fetch(`${srv.env.E2B_SANDBOX_URL}/health`, { headers: { "E2b-Sandbox-Id": "sb_000000000000000000000000", "E2b-Sandbox-Port": "49983" } });
      assert.equal(unknown.status, 502);
    } finally {
      await sb.kill();
    }
  });

  it("errors: a bad key, an unknown template, malformed bodies, a key's quota — each as the SDK's own error with agentbox's message", async () => {
    await assert.rejects(Sandbox.create("agentbox-python", { apiKey: "e2b_" + "00".repeat(20) }), (e: Error) => e instanceof AuthenticationError && /not one of this agentbox server's keys/.test(e.message));
    await assert.rejects(Sandbox.create("no-such-template"), (e: Error) => e instanceof SandboxError && /404: template 'no-such-template' not found \(agentbox serves: .*code-interpreter-v1/.test(e.message));
    await assert.rejects(Sandbox.create("agentbox-python", { metadata: { ["k".repeat(300)]: "v" } }), (e: Error) => /400: invalid options: metadata/.test(e.message));
    const api = (path: string, body: string) => fetch(`${srv.env.E2B_API_URL}${path}`, { method: "POST", headers: { "X-API-KEY": E2B_KEY, "content-type": "application/json" }, body });
    for (const [body, want] of [
      ["{", /not valid JSON/],
      ["[]", /expected object, received array/],
      ["{}", /templateID/],
      [JSON.stringify({ templateID: "base", timeout: -1 }), /timeout/],
      [JSON.stringify({ templateID: "base", envVars: { A: 1 } }), /envVars\.A/],
    ] as const) {
      const r = await api("/v2/sandboxes", body);
      assert.equal(r.status, 400, body);
      const j = (await r.json()) as { code: number; message: string };
      assert.equal(j.code, 400);
      assert.match(j.message, want);
    }
    const unknownRoute = await fetch(`${srv.env.E2B_API_URL}/v9/nothing`, { headers: { "X-API-KEY": E2B_KEY } });
    assert.equal(unknownRoute.status, 404);
    assert.match(((await unknownRoute.json()) as { message: string }).message, /no route GET \/v9\/nothing/);
    await assert.rejects(Sandbox.connect("sb_000000000000000000000000"), NotFoundError);

    // The key's quota (10 live sandboxes by default): the SDK's RateLimitError, with agentbox's reason.
    const made: Sandbox[] = [];
    try {
      for (let i = 0; i < 10; i++) made.push(await Sandbox.create("agentbox-javascript"));
      await assert.rejects(Sandbox.create("agentbox-javascript"), (e: Error) => e instanceof RateLimitError && /quota maxSandboxes/.test(e.message));
    } finally {
      await Promise.all(made.map((s) => s.kill()));
    }
  });
});

describe("E2B-compatible API: network options map onto the operator's grant", () => {
  let srv: E2bServer;
  let web: Server;
  let port = 0;
  before(async () => {
    web = createServer((_req, res) => res.end("hello from the allowed host"));
    await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
    port = (web.address() as AddressInfo).port;
    srv = await startE2bServer({ netAllow: [`127.0.0.1:${port}`] });
  });
  after(async () => {
    await srv?.close();
    web?.close();
  });
  const fetchFrom = async (id: string) => {
    const r = await fetch(`${srv.server.url}/sandboxes/${id}/run`, {
      method: "POST",
      headers: { authorization: `Bearer ${E2B_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ code: `import urllib.request\ntry:\n    out = urllib.request.urlopen("http://127.0.0.1:${port}/").read().decode()\nexcept Exception as e:\n    out = type(e).__name__\nout` }),
    });
    return ((await r.json()) as { value?: string }).value;
  };

  it("internet access on (E2B's default) is what the operator grants; off is none; allowOut narrows, and must be within the grant", async () => {
    const open = await Sandbox.create("agentbox-python");
    const info = await open.getInfo();
    assert.equal(info.allowInternetAccess, true);
    assert.deepEqual(info.network?.allowOut, [`127.0.0.1:${port}`]);
    assert.equal(await fetchFrom(open.sandboxId), "'hello from the allowed host'");
    await open.kill();

    const closed = await Sandbox.create("agentbox-python", { allowInternetAccess: false });
    assert.equal((await closed.getInfo()).allowInternetAccess, false);
    assert.match((await fetchFrom(closed.sandboxId)) ?? "", /^'\w*Error'$/); // refused: no network at all
    await closed.kill();

    const narrowed = await Sandbox.create("agentbox-python", { network: { allowOut: [`127.0.0.1:${port}`], denyOut: ["0.0.0.0/0"] } });
    assert.equal(await fetchFrom(narrowed.sandboxId), "'hello from the allowed host'");
    await narrowed.kill();

    await assert.rejects(Sandbox.create("agentbox-python", { network: { allowOut: ["api.example.com"] } }), /400: invalid options: network\.allow\.0: "api\.example\.com" is not within the hosts this server's --allow-net grants/);
  });
});

describe("E2B-compatible API: an unmodified E2B script runs with only the three variables set", { skip: skipHeavy }, () => {
  let srv: E2bServer;
  before(async () => {
    await ensureDataImage();
    srv = await startE2bServer();
  });
  after(async () => {
    await srv?.close();
  });

  it("examples/e2b-agent.mjs: create (code interpreter template), runCode with a chart, commands, files, kill", async () => {
    const script = fileURLToPath(new URL("../../examples/e2b-agent.mjs", import.meta.url));
    // Only what a user sets: the three variables (plus PATH and HOME, which any shell has).
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...srv.env };
    const child = spawn(process.execPath, [script], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => child.on("close", r));
    assert.equal(code, 0, `exit ${code}\nstdout: ${out}\nstderr: ${err}`);
    const lines = out.trim().split("\n");
    assert.equal(lines[0], "stdout: rows: 4");
    assert.equal(lines[1], "total: 565");
    const png = Number(/^chart png bytes: (\d+)$/.exec(lines[2] ?? "")?.[1]);
    assert.ok(png > 5000, lines[2]);
    assert.equal(lines[3], "chart: bar 'Units per month' 4 bars");
    assert.equal(lines[4], "ls: sales.csv units.png 3");
    assert.equal(lines[5], "files: sales.csv units.png");
    assert.ok(Number(/^saved png bytes: (\d+)$/.exec(lines[6] ?? "")?.[1]) > 5000, lines[6]);
    assert.deepEqual(await Sandbox.list().nextItems(), []); // the script killed its sandbox
  });
});
