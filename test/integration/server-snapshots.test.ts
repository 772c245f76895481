// Snapshots and forks over HTTP (heavy tier, gVisor): a snapshot of this key restores into new
// sandboxes with the original's variables and files; forks start independent copies; another
// key sees none of it (404); the key's maxSnapshots quota is a 429; deleting removes it.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KeyRing, startServer, type RunningServer } from "../../src/server/index.js";
import "../helpers.js";
import { ensureImage, skipHeavy } from "../heavy.js";

const ALICE = "alice-key-0123456789abcdef";
const BOB = "bob-key-0123456789abcdef00";

async function api(base: string, key: string, method: string, path: string, json?: unknown) {
  const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await res.text();
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const body: any = text && (res.headers.get("content-type") ?? "").includes("json") ? JSON.parse(text) : undefined;
  return { status: res.status, json: body, text };
}

describe("HTTP API: snapshots and forks (gVisor)", { skip: skipHeavy }, () => {
  let srv: RunningServer;
  before(async () => {
    await ensureImage();
    const keys = KeyRing.fromEntries([
      { name: "alice", key: ALICE, maxSandboxes: 6, maxSnapshots: 1 },
      { name: "bob", key: BOB, maxSandboxes: 2 },
    ]);
    srv = await startServer({ port: 0, keys, poolSize: 0, log: () => undefined });
  });
  after(async () => {
    await srv?.close();
  });

  it("snapshot → restore (twice) and fork: the original's variables and files; owned by the key; quota; delete", async () => {
    const a = (method: string, path: string, json?: unknown) => api(srv.url, ALICE, method, path, json);
    const created = await a("POST", "/sandboxes", { tier: "heavy", backend: "gvisor" });
    assert.equal(created.status, 201, created.text);
    const id = created.json.id as string;
    assert.equal((await a("POST", `/sandboxes/${id}/run`, { code: "x = 41\nopen('/home/user/f.txt', 'w').write('saved')" })).status, 200);

    const snap = await a("POST", `/sandboxes/${id}/snapshots`);
    assert.equal(snap.status, 201, snap.text);
    assert.match(snap.json.id, /^snap_[0-9a-f]{24}$/);
    assert.equal(snap.json.sandboxId, id);
    assert.equal(snap.json.tier, "heavy");
    // The checkpoint on disk (no state directory here): counted against maxSnapshotMb.
    assert.ok(snap.json.sizeBytes > 1_000_000, `sizeBytes ${snap.json.sizeBytes}`);
    assert.ok(Date.parse(snap.json.expiresAt) > Date.parse(snap.json.createdAt));
    const sid = snap.json.id as string;
    // The original runs on, and changes after the snapshot do not reach restores.
    assert.equal((await a("POST", `/sandboxes/${id}/run`, { code: "x = 0" })).status, 200);

    assert.deepEqual((await a("GET", "/snapshots")).json.snapshots.map((s: { id: string }) => s.id), [sid]);
    const over = await a("POST", `/sandboxes/${id}/snapshots`);
    assert.equal(over.status, 429, "maxSnapshots is 1");
    assert.equal(over.json.error.code, "QUOTA_EXCEEDED");

    // Another key: none of it exists.
    const b = (method: string, path: string, json?: unknown) => api(srv.url, BOB, method, path, json);
    assert.deepEqual((await b("GET", "/snapshots")).json.snapshots, []);
    assert.equal((await b("POST", `/snapshots/${sid}/restore`)).status, 404);
    assert.equal((await b("DELETE", `/snapshots/${sid}`)).status, 404);
    assert.equal((await b("POST", `/sandboxes/${id}/fork`, { count: 1 })).status, 404);

    for (let i = 0; i < 2; i++) {
      const r = await a("POST", `/snapshots/${sid}/restore`);
      assert.equal(r.status, 201, r.text);
      assert.notEqual(r.json.id, id);
      const v = await a("POST", `/sandboxes/${r.json.id}/run`, { code: "(x, open('/home/user/f.txt').read())" });
      assert.equal(v.json.value, "(41, 'saved')", "the state at the snapshot");
      assert.equal((await a("DELETE", `/sandboxes/${r.json.id}`)).status, 204);
    }

    const fork = await a("POST", `/sandboxes/${id}/fork`, { count: 2 });
    assert.equal(fork.status, 201, fork.text);
    assert.equal(fork.json.sandboxes.length, 2);
    const [f1, f2] = fork.json.sandboxes.map((s: { id: string }) => s.id) as [string, string];
    await a("POST", `/sandboxes/${f1}/run`, { code: "x = 'changed in fork 1'" });
    assert.equal((await a("POST", `/sandboxes/${f2}/run`, { code: "x" })).json.value, "0", "forks are independent copies of the original now");
    assert.equal((await a("POST", `/sandboxes/${id}/run`, { code: "x" })).json.value, "0");
    assert.deepEqual((await a("GET", "/snapshots")).json.snapshots.length, 1, "a fork keeps no snapshot");

    assert.equal((await a("DELETE", `/snapshots/${sid}`)).status, 204);
    assert.equal((await a("POST", `/snapshots/${sid}/restore`)).status, 404);
    assert.deepEqual((await a("GET", "/snapshots")).json.snapshots, []);
  });

  it("pause and resume: by the idle timeout (idleAction pause, the default) and on request; any request resumes; idleAction kill deletes", async () => {
    const a = (method: string, path: string, json?: unknown) => api(srv.url, ALICE, method, path, json);
    const created = await a("POST", "/sandboxes", { tier: "heavy", backend: "gvisor", idleTimeoutMs: 1000 });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json.idleAction, "pause");
    const id = created.json.id as string;
    await a("POST", `/sandboxes/${id}/run`, { code: "kept = [1, 2, 3]\nopen('/tmp/kept.txt', 'w').write('file kept')" });
    let info = created.json;
    for (let i = 0; i < 100 && info.status !== "paused"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      info = (await a("GET", `/sandboxes/${id}`)).json;
    }
    assert.equal(info.status, "paused", "the idle timeout paused it");
    assert.equal((await a("GET", `/sandboxes/${id}`)).json.status, "paused", "reading its info leaves it paused");
    const m = await a("GET", "/metrics");
    assert.match(m.text, /agentbox_sandboxes_paused_total 1/);
    // A request that uses it brings it back, with its variables and files.
    const r = await a("POST", `/sandboxes/${id}/run`, { code: "(kept, open('/tmp/kept.txt').read())" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.value, "([1, 2, 3], 'file kept')");
    assert.equal((await a("GET", `/sandboxes/${id}`)).json.status, "running");
    // On request, with a longer idle timeout.
    await a("POST", `/sandboxes/${id}/keepalive`, { idleTimeoutMs: 60_000 });
    const p = await a("POST", `/sandboxes/${id}/pause`);
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.status, "paused");
    assert.ok(Date.parse(p.json.expiresAt) > Date.now() + 3600_000, "a paused sandbox is kept for the TTL");
    const back = await a("POST", `/sandboxes/${id}/resume`);
    assert.deepEqual([back.status, back.json.status], [200, "running"]);
    assert.equal((await a("GET", `/sandboxes/${id}/files?path=/tmp/kept.txt`)).text, "file kept");
    assert.equal((await a("DELETE", `/sandboxes/${id}`)).status, 204);

    const killed = await a("POST", "/sandboxes", { tier: "heavy", backend: "gvisor", idleTimeoutMs: 1000, idleAction: "kill" });
    let gone = 0;
    for (let i = 0; i < 100 && gone !== 404; i++) {
      await new Promise((r) => setTimeout(r, 100));
      gone = (await a("GET", `/sandboxes/${killed.json.id}`)).status;
    }
    assert.equal(gone, 404, "idleAction kill deletes it");
  });

  it("nano sandboxes too (replay): snapshot and restore, and an idle one is paused and comes back with the same id", async () => {
    const a = (method: string, path: string, json?: unknown) => api(srv.url, BOB, method, path, json);
    const created = await a("POST", "/sandboxes", { language: "python", seed: 4, idleTimeoutMs: 1000 });
    const id = created.json.id as string;
    await a("POST", `/sandboxes/${id}/run`, { code: "import random\nv = random.random()" });
    const snap = await a("POST", `/sandboxes/${id}/snapshots`);
    assert.equal(snap.status, 201, snap.text);
    const copy = await a("POST", `/snapshots/${snap.json.id}/restore`);
    assert.equal(copy.status, 201, copy.text);
    const original = (await a("POST", `/sandboxes/${id}/run`, { code: "(v, random.random())" })).json.value;
    assert.equal((await a("POST", `/sandboxes/${copy.json.id}/run`, { code: "(v, random.random())" })).json.value, original, "a seeded copy continues the same stream");
    assert.equal((await a("DELETE", `/sandboxes/${copy.json.id}`)).status, 204);
    assert.equal((await a("DELETE", `/snapshots/${snap.json.id}`)).status, 204);
    let status = "";
    for (let i = 0; i < 100 && status !== "paused"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await a("GET", `/sandboxes/${id}`)).json.status;
    }
    assert.equal(status, "paused");
    const back = await a("POST", `/sandboxes/${id}/run`, { code: "v" });
    assert.equal(back.status, 200, back.text);
    assert.equal(back.json.value, String(original).slice(1, String(original).indexOf(",")), "its variables after the pause");
    assert.equal((await a("GET", `/sandboxes/${id}`)).json.id, id);
    assert.equal((await a("DELETE", `/sandboxes/${id}`)).status, 204);
  });
});

describe("HTTP API: maxSnapshotMb without a state directory (what a snapshot takes where it is)", () => {
  const SMALL = "small-key-0123456789abcdef";
  let srv: RunningServer;
  before(async () => {
    srv = await startServer({ port: 0, keys: KeyRing.fromEntries([{ name: "small", key: SMALL, maxSnapshotMb: 1 }]), log: () => undefined });
  });
  after(async () => {
    await srv?.close();
  });

  it("a nano snapshot's history and file image count (sizeBytes); past the key's MiB a 429 naming the quota, and nothing is kept", async () => {
    const s = (method: string, path: string, json?: unknown) => api(srv.url, SMALL, method, path, json);
    const id = (await s("POST", "/sandboxes", { language: "python" })).json.id as string;
    assert.equal((await s("POST", `/sandboxes/${id}/run`, { code: "open('/home/user/small.txt', 'w').write('x' * 1000)" })).status, 200);
    const ok = await s("POST", `/sandboxes/${id}/snapshots`);
    assert.equal(ok.status, 201, ok.text);
    // The cell's code plus the 1000-byte file in the image (and its path).
    assert.ok(ok.json.sizeBytes > 1000 && ok.json.sizeBytes < 2000, `sizeBytes ${ok.json.sizeBytes}`);
    assert.equal((await s("POST", `/sandboxes/${id}/run`, { code: "open('/home/user/big.bin', 'wb').write(bytes(700_000))" })).status, 200);
    // 700 kB written by the guest (in the file image only) and 400 kB uploaded by the host (in the image and in the history): ~1.5 MiB.
    const upload = await fetch(`${srv.url}/sandboxes/${id}/files?path=/home/user/upload.bin`, { method: "PUT", headers: { authorization: `Bearer ${SMALL}` }, body: new Uint8Array(400_000) });
    assert.equal(upload.status, 204);
    const over = await s("POST", `/sandboxes/${id}/snapshots`);
    assert.equal(over.status, 429, over.text);
    assert.equal(over.json.error.code, "QUOTA_EXCEEDED");
    assert.match(over.json.error.message, /this snapshot takes 1\.[0-9] MiB .* of its 1 MiB \(quota maxSnapshotMb\)/);
    assert.equal((await s("GET", "/snapshots")).json.snapshots.length, 1, "the refused snapshot is not kept");
  });
});
