// `agentbox serve` as a process: SIGTERM kills every sandbox it owns and leaves no worker behind
// (nor, for heavy-tier sandboxes, any container, cgroup or state dir); without keys it refuses a
// non-loopback address.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
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
