// `agentbox serve` as a process: SIGTERM kills every sandbox it owns and leaves no worker behind
// (nor, for heavy-tier sandboxes, any container, cgroup or state dir); without keys it refuses a
// non-loopback address.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { describe, it } from "node:test";
import { agentboxEnv, isAlive, waitGone } from "../helpers.js";
import { ensureImage, leftovers, skipHeavy, waitFor } from "../heavy.js";
import { BIN, childPids, heavyBoxesOf, spawnServer } from "../server-helpers.js";

describe("agentbox serve (process)", () => {
  it("SIGTERM kills every sandbox it owns, exits 0 and leaves no worker process", async () => {
    const key = "sigterm-test-key-0123456789";
    const { proc, url, stderr } = await spawnServer(["--pool", "1"], { AGENTBOX_API_KEYS: key });
    const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${url}/sandboxes`, { method: "POST", headers: auth, body: "{}" });
      assert.equal(r.status, 201, await r.clone().text());
      ids.push(((await r.json()) as { id: string }).id);
    }
    // A run still in progress when the signal arrives must not keep anything alive either.
    const busy = fetch(`${url}/sandboxes/${ids[0]}/run`, { method: "POST", headers: auth, body: JSON.stringify({ code: "while True: pass" }) }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    const workers = childPids(proc.pid);
    assert.ok(workers.length >= 2, `expected at least 2 workers, saw ${workers.length}`);
    proc.kill("SIGTERM");
    const [code] = (await once(proc, "exit")) as [number | null];
    assert.equal(code, 0, stderr());
    await busy;
    for (const p of workers) await waitGone(p);
    assert.deepEqual(workers.filter(isAlive), []);
    assert.match(stderr(), /shutting down/);
  });

  it("SIGTERM removes heavy-tier sandboxes too: containers, processes, cgroups, state dirs (pooled ones included)", { skip: skipHeavy }, async () => {
    await ensureImage();
    const key = "sigterm-heavy-key-0123456789";
    const { proc, url, stderr } = await spawnServer(["--pool", "1"], { AGENTBOX_API_KEYS: key });
    const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await fetch(`${url}/sandboxes`, { method: "POST", headers: auth, body: JSON.stringify({ tier: "heavy" }) });
      assert.equal(r.status, 201, await r.clone().text());
      ids.push(((await r.json()) as { id: string }).id);
    }
    // A background process in one, and a command still running in the other when the signal comes.
    const bg = await fetch(`${url}/sandboxes/${ids[0]}/commands`, { method: "POST", headers: auth, body: JSON.stringify({ cmd: "sleep 100 > /dev/null 2>&1 & echo started" }) });
    assert.equal(((await bg.json()) as { stdout: string }).stdout, "started\n");
    const busy = fetch(`${url}/sandboxes/${ids[1]}/commands`, { method: "POST", headers: auth, body: JSON.stringify({ cmd: "sleep 100" }) }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    const boxes = heavyBoxesOf(proc.pid!);
    assert.ok(boxes.length >= 2, `expected at least 2 gVisor sandboxes owned by the server, saw ${boxes.length}`);
    proc.kill("SIGTERM");
    const [code] = (await once(proc, "exit")) as [number | null];
    assert.equal(code, 0, stderr());
    await busy;
    const clean = () => boxes.every((b) => { const l = leftovers(b); return l.processes.length === 0 && !l.dir && l.cgroups.length === 0; });
    assert.ok(await waitFor(clean), JSON.stringify(boxes.map(leftovers)));
    assert.deepEqual(heavyBoxesOf(proc.pid!), []);
  });

  // As `npx agentbox serve` runs it: under `npm exec` and a `sh -c`. A process manager's SIGTERM
  // ends those and re-parents the server; it must notice and shut down as on SIGTERM.
  for (const cmd of ["serve", "mcp"] as const) {
    it(`${cmd} shuts down with its sandboxes when the process that started it goes away`, async () => {
      const key = "orphan-test-key-0123456789";
      const args = cmd === "serve" ? ["serve", "--port", "0", "--pool", "1"] : ["mcp"];
      // `; :` keeps sh as the parent instead of exec-ing node in its place.
      const sh = spawn("sh", ["-c", `"$0" "$@"; :`, process.execPath, BIN, ...args], { env: agentboxEnv({ AGENTBOX_API_KEYS: key }), stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      let err = "";
      sh.stdout.on("data", (d: Buffer) => (out += d.toString()));
      sh.stderr.on("data", (d: Buffer) => (err += d.toString()));
      let server: number | undefined;
      assert.ok(await waitFor(() => (server = childPids(sh.pid).find((p) => p !== undefined)) !== undefined, 10_000), "no server process");
      if (cmd === "serve") {
        assert.ok(await waitFor(() => /listening on (\S+)/.test(out), 30_000), err);
        const url = /listening on (\S+)/.exec(out)![1]!;
        const r = await fetch(`${url}/sandboxes`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: "{}" });
        assert.equal(r.status, 201, await r.text());
      } else {
        // An MCP client's first request starts the session's sandbox; stdin stays open (we hold it).
        sh.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "0" } } })}\n`);
        sh.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" })}\n`);
        sh.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "run_python", arguments: { code: "1 + 1" } } })}\n`);
        assert.ok(await waitFor(() => out.includes('"id":2'), 60_000), err);
      }
      const workers = childPids(server);
      assert.ok(workers.length >= 1, "expected a sandbox worker");
      sh.kill("SIGKILL");
      await waitGone(server, 10_000);
      for (const p of workers) await waitGone(p, 10_000);
      if (cmd === "serve") assert.match(err, /the process that started it exited: shutting down/);
      sh.stdin.destroy();
    });
  }

  it("mcp exits when its stdin closes, leaving no worker", async () => {
    const mcp = spawn(process.execPath, [BIN, "mcp"], { env: agentboxEnv(), stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    mcp.stdout.on("data", (d: Buffer) => (out += d.toString()));
    mcp.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "t", version: "0" } } })}\n`);
    mcp.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" })}\n`);
    mcp.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "run_python", arguments: { code: "1 + 1" } } })}\n`);
    assert.ok(await waitFor(() => out.includes('"id":2'), 60_000));
    const workers = childPids(mcp.pid);
    assert.ok(workers.length >= 1);
    mcp.stdin.end();
    const [code] = (await once(mcp, "exit")) as [number | null];
    assert.equal(code, 0);
    for (const p of workers) await waitGone(p, 10_000);
  });

  it("refuses a non-loopback address without API keys (exit 64, says why)", () => {
    const r = spawnSync(process.execPath, [BIN, "serve", "--host", "0.0.0.0", "--port", "0"], { encoding: "utf8", timeout: 30_000, env: agentboxEnv({ AGENTBOX_API_KEYS: "", AGENTBOX_API_KEYS_FILE: "" }) });
    assert.equal(r.status, 64);
    assert.match(r.stderr, /refusing to listen on 0\.0\.0\.0 without API keys/);
  });

  it("rejects a malformed key file with a message naming the field", () => {
    const r = spawnSync(process.execPath, [BIN, "serve", "--port", "0"], { encoding: "utf8", timeout: 30_000, env: agentboxEnv({ AGENTBOX_API_KEYS: '{"keys":[{"name":"a","key":"short"}]}' }) });
    assert.equal(r.status, 64);
    assert.match(r.stderr, /keys\.0\.key/);
  });
});
