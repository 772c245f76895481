// `agentbox serve --state-dir DIR` across restarts (real server processes): a nano sandbox paused
// at SIGTERM (--on-shutdown pause) is there after the restart, paused, and a run resumes it with
// its variables and files (same id); a snapshot restores; the same on the heavy tier (gVisor, microVM).
// What a killed server leaves half-written (.tmp-*) is removed at the next start; an entry whose
// payload was changed, or whose meta.json names a path outside its directory, is skipped with the
// reason logged, moved aside, and answers 404 saying why.
import assert from "node:assert/strict";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { spawnSync, type ChildProcess } from "node:child_process";
import { agentboxEnv } from "../helpers.js";
import { ensureImage, skipHeavy } from "../heavy.js";
import { ensureArtefacts, skipMicrovm } from "../microvm.js";
import { BIN, spawnServer } from "../server-helpers.js";

const KEY = "state-test-key-0123456789abcdef";
const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function stateDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-state-test-"));
  dirs.push(d);
  return d;
}

interface Server {
  proc: ChildProcess;
  url: string;
  stderr: () => string;
  api: (method: string, p: string, json?: unknown) => Promise<{ status: number; json: any; text: string }>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function start(dir: string, extra: string[] = []): Promise<Server> {
  const s = await spawnServer(["--pool", "0", "--state-dir", dir, ...extra], { AGENTBOX_API_KEYS: KEY });
  const api = async (method: string, p: string, json?: unknown) => {
    const res = await fetch(s.url + p, { method, headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" }, body: json === undefined ? undefined : typeof json === "string" ? json : JSON.stringify(json) });
    const text = await res.text();
    const body = text && (res.headers.get("content-type") ?? "").includes("json") ? JSON.parse(text) : undefined;
    return { status: res.status, json: body, text };
  };
  return { ...s, api };
}

async function stop(s: Server, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  s.proc.kill(signal);
  const [code] = (await once(s.proc, "exit")) as [number | null];
  if (signal === "SIGTERM") assert.equal(code, 0, s.stderr());
}

/** A sandbox with a variable, a file written by a cell and one uploaded; a snapshot of it; the server stopped with SIGTERM and started again. */
async function roundTrip(dir: string, create: object, prepare?: (srv: Server, id: string) => Promise<void>): Promise<{ srv: Server; id: string; sid: string }> {
  let srv = await start(dir);
  const created = await srv.api("POST", "/sandboxes", create);
  assert.equal(created.status, 201, created.text);
  const id = created.json.id as string;
  await prepare?.(srv, id);
  const run = await srv.api("POST", `/sandboxes/${id}/run`, { code: "x = 41\nopen('/home/user/f.txt', 'w').write('saved')" });
  assert.equal(run.status, 200, run.text);
  const up = await fetch(`${srv.url}/sandboxes/${id}/files?path=/tmp/up.bin`, { method: "PUT", headers: { authorization: `Bearer ${KEY}`, "content-type": "application/octet-stream" }, body: new Uint8Array([1, 2, 3, 250]) });
  assert.equal(up.status, 204, await up.text());
  const snap = await srv.api("POST", `/sandboxes/${id}/snapshots`);
  assert.equal(snap.status, 201, snap.text);
  const sid = snap.json.id as string;
  assert.ok(fs.existsSync(path.join(dir, "snapshots", sid, "meta.json")), "the snapshot is on disk once taken");
  // Changed after the snapshot: the paused sandbox has it, restores of the snapshot do not.
  assert.equal((await srv.api("POST", `/sandboxes/${id}/run`, { code: "x += 1" })).status, 200);
  await stop(srv);
  assert.match(srv.stderr(), /pausing every sandbox/);
  assert.ok(fs.existsSync(path.join(dir, "paused", id, "meta.json")), `the sandbox was paused into the state dir: ${srv.stderr()}`);
  srv = await start(dir);
  return { srv, id, sid };
}

async function checkRestored(srv: Server, id: string, sid: string, dir: string): Promise<void> {
  const info = await srv.api("GET", `/sandboxes/${id}`);
  assert.equal(info.status, 200, info.text);
  assert.equal(info.json.status, "paused");
  assert.deepEqual((await srv.api("GET", "/snapshots")).json.snapshots.map((s: { id: string }) => s.id), [sid]);
  const v = await srv.api("POST", `/sandboxes/${id}/run`, { code: "(x, open('/home/user/f.txt').read(), list(open('/tmp/up.bin', 'rb').read()))" });
  assert.equal(v.status, 200, v.text);
  assert.equal(v.json.value, "(42, 'saved', [1, 2, 3, 250])", "resumed with its variables and files");
  assert.equal((await srv.api("GET", `/sandboxes/${id}`)).json.status, "running");
  assert.ok(!fs.existsSync(path.join(dir, "paused", id)), "running again: its paused state is gone from disk");
  const r = await srv.api("POST", `/snapshots/${sid}/restore`);
  assert.equal(r.status, 201, r.text);
  const rv = await srv.api("POST", `/sandboxes/${r.json.id}/run`, { code: "(x, open('/home/user/f.txt').read(), list(open('/tmp/up.bin', 'rb').read()))" });
  assert.equal(rv.json.value, "(41, 'saved', [1, 2, 3, 250])", "the snapshot restores the state it was taken at");
  assert.equal((await srv.api("DELETE", `/snapshots/${sid}`)).status, 204);
  assert.ok(!fs.existsSync(path.join(dir, "snapshots", sid)), "a deleted snapshot is deleted from disk");
}

describe("agentbox serve --state-dir", () => {
  it("nano: a sandbox paused at SIGTERM comes back paused with its id; a run resumes it; the snapshot restores", async () => {
    const dir = stateDir();
    const { srv, id, sid } = await roundTrip(dir, { language: "python", seed: 7 });
    try {
      await checkRestored(srv, id, sid, dir);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("agentbox snapshot list|rm on a stopped server's state dir: lists snapshots and paused sandboxes, removes one, refuses an unknown id", async () => {
    const dir = stateDir();
    const { srv, id, sid } = await roundTrip(dir, { language: "python", seed: 7 });
    await stop(srv);
    const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, "snapshot", ...args], { env: agentboxEnv(), encoding: "utf8" });
    const listed = cli("list", "--state-dir", dir, "--json");
    assert.equal(listed.status, 0, listed.stderr);
    const snaps = JSON.parse(listed.stdout) as { id: string; owner: string }[];
    assert.deepEqual(snaps.map((e) => e.id), [sid]);
    assert.equal(snaps[0]!.owner.length > 0, true);
    assert.deepEqual((JSON.parse(cli("list", "--state-dir", dir, "--paused", "--json").stdout) as { id: string }[]).map((e) => e.id), [id]);
    assert.match(cli("list", "--state-dir", dir).stdout, new RegExp(`^${sid}  owner=`));
    const rm = cli("rm", "--state-dir", dir, sid);
    assert.equal(rm.status, 0, rm.stderr);
    assert.deepEqual(JSON.parse(cli("list", "--state-dir", dir, "--json").stdout), []);
    const unknown = cli("rm", "--state-dir", dir, "snap_000000000000000000000000");
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /no snapshot "snap_0+"/);
    assert.equal(cli("list").status, 64, "--state-dir is required");
    // The next start has the paused sandbox and not the removed snapshot.
    const again = await start(dir);
    try {
      assert.equal((await again.api("GET", `/sandboxes/${id}`)).json.status, "paused");
      assert.deepEqual((await again.api("GET", "/snapshots")).json.snapshots, []);
      await stop(again);
    } finally {
      again.proc.kill("SIGKILL");
    }
  });

  it("a key's snapshots on disk are bounded by its maxSnapshotMb (429 naming the quota); each reports its size", async () => {
    const dir = stateDir();
    const keys = JSON.stringify({ keys: [{ name: "roomy", key: KEY }, { name: "tiny", key: "tiny-key-0123456789abcdef", maxSnapshotMb: 0 }] });
    const s = await spawnServer(["--pool", "0", "--state-dir", dir], { AGENTBOX_API_KEYS: keys });
    try {
      const call = async (key: string, method: string, p: string, json?: unknown) => {
        const res = await fetch(s.url + p, { method, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: json === undefined ? undefined : JSON.stringify(json) });
        return { status: res.status, json: (await res.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
      };
      for (const key of [KEY, "tiny-key-0123456789abcdef"]) {
        const id = (await call(key, "POST", "/sandboxes", { language: "python" })).json.id as string;
        await call(key, "POST", `/sandboxes/${id}/run`, { code: "x = 1" });
        const snap = await call(key, "POST", `/sandboxes/${id}/snapshots`);
        if (key === KEY) {
          assert.equal(snap.status, 201, JSON.stringify(snap.json));
          assert.ok(snap.json.sizeBytes > 0, "the size it takes on disk");
        } else {
          assert.equal(snap.status, 429, JSON.stringify(snap.json));
          assert.match(snap.json.error.message, /quota maxSnapshotMb/);
          assert.deepEqual((await call(key, "GET", "/snapshots")).json.snapshots, []);
          assert.equal(fs.readdirSync(path.join(dir, "snapshots")).length, 1, "the refused one left nothing on disk");
        }
      }
    } finally {
      s.proc.kill("SIGKILL");
    }
  });

  it("a half-written entry (.tmp-*, or no meta.json) is ignored and cleaned up; a flipped byte or a path outside the entry is refused, logged, moved aside, 404 naming why", async () => {
    const dir = stateDir();
    const { srv: first, id, sid } = await roundTrip(dir, { language: "python", seed: 3 });
    await stop(first);
    // What a SIGKILL in the middle of a pause leaves: a .tmp-* directory with part of a payload.
    const tmp = path.join(dir, ".tmp-deadbeef00000000");
    fs.mkdirSync(path.join(tmp, "data"), { recursive: true });
    fs.writeFileSync(path.join(tmp, "data", "0"), "partial");
    // An entry without meta.json (written by hand: not what the store does, but what a crash of another writer could leave).
    const half = `sb_${"ab".repeat(12)}`;
    fs.mkdirSync(path.join(dir, "paused", half));
    fs.writeFileSync(path.join(dir, "paused", half, "snapshot.json"), "{");
    // The snapshot: one payload byte flipped.
    const snapDir = path.join(dir, "snapshots", sid);
    const snapshotJson = path.join(snapDir, "snapshot.json");
    const bytes = fs.readFileSync(snapshotJson);
    bytes[bytes.length - 2] = (bytes[bytes.length - 2] as number) ^ 0x01;
    fs.writeFileSync(snapshotJson, bytes);
    // The paused sandbox: its meta.json names a file outside the entry (with a matching checksum, so only the path check stops it).
    const metaPath = path.join(dir, "paused", id, "meta.json");
    const meta = JSON.parse(fs.readFileSync(metaPath, "utf8"));
    meta.files.push({ path: "../../outside", bytes: 0, sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" });
    fs.writeFileSync(metaPath, JSON.stringify(meta));

    const srv = await start(dir);
    try {
      assert.ok(!fs.existsSync(tmp), "the .tmp-* left by a killed server is removed at start");
      const log = srv.stderr();
      assert.match(log, new RegExp(`skipped snapshot "${sid}": "snapshot.json" does not match its SHA-256`));
      assert.match(log, new RegExp(`skipped paused sandbox "${id}": meta.json names the path "\\.\\./\\.\\./outside"`));
      assert.match(log, new RegExp(`skipped paused sandbox "${half}": meta.json is missing`));
      assert.ok(fs.existsSync(path.join(dir, "snapshots", `.corrupt-${sid}`, "reason.txt")), "moved aside, with the reason");
      assert.ok(!fs.existsSync(snapDir));
      assert.deepEqual((await srv.api("GET", "/sandboxes")).json.sandboxes, []);
      assert.deepEqual((await srv.api("GET", "/snapshots")).json.snapshots, []);
      const r = await srv.api("POST", `/snapshots/${sid}/restore`);
      assert.equal(r.status, 404);
      assert.match(r.json.error.message, /cannot be restored: "snapshot.json" does not match its SHA-256/);
      const g = await srv.api("POST", `/sandboxes/${id}/run`, { code: "1" });
      assert.equal(g.status, 404);
      assert.match(g.json.error.message, /cannot be resumed: meta\.json names the path/);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
    // The next start does not look at what was moved aside again.
    const again = await start(dir);
    try {
      assert.doesNotMatch(again.stderr(), /skipped/);
      await stop(again);
    } finally {
      again.proc.kill("SIGKILL");
    }
  });

  it("SIGKILL mid-pause leaves no entry or a whole one: a server killed while pausing restarts cleanly", async () => {
    const dir = stateDir();
    let srv = await start(dir);
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const c = await srv.api("POST", "/sandboxes", { language: "python", seed: i });
      assert.equal(c.status, 201, c.text);
      ids.push(c.json.id);
      await srv.api("POST", `/sandboxes/${c.json.id}/run`, { code: `v = ${i} * 10` });
    }
    // Pauses under way when the server is killed: each entry is either absent or complete.
    void srv.api("POST", `/sandboxes/${ids[0]}/pause`).catch(() => undefined);
    void srv.api("POST", `/sandboxes/${ids[1]}/pause`).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 60));
    await stop(srv, "SIGKILL");
    srv = await start(dir);
    try {
      assert.doesNotMatch(srv.stderr(), /skipped/, "nothing half-written is ever taken for an entry");
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith(".tmp-")), []);
      const listed = (await srv.api("GET", "/sandboxes")).json.sandboxes as { id: string; status: string }[];
      for (const s of listed) {
        assert.equal(s.status, "paused");
        const i = ids.indexOf(s.id);
        assert.equal((await srv.api("POST", `/sandboxes/${s.id}/run`, { code: "v" })).json.value, String(i * 10));
      }
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("heavy (gVisor): a sandbox paused at SIGTERM comes back paused with its id; a run resumes it; the snapshot restores", { skip: skipHeavy }, async () => {
    await ensureImage();
    const dir = stateDir();
    const { srv, id, sid } = await roundTrip(dir, { tier: "heavy", backend: "gvisor" });
    try {
      await checkRestored(srv, id, sid, dir);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("heavy (microVM): the same", { skip: skipMicrovm }, async () => {
    await ensureArtefacts();
    const dir = stateDir();
    const { srv, id, sid } = await roundTrip(dir, { tier: "heavy", backend: "microvm" });
    try {
      await checkRestored(srv, id, sid, dir);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("tier auto, once on the heavy tier: the same", { skip: skipHeavy }, async () => {
    await ensureImage();
    const dir = stateDir();
    const { srv, id, sid } = await roundTrip(dir, { tier: "auto" }, async (srv, id) => {
      const moved = await srv.api("POST", `/sandboxes/${id}/commands`, { cmd: "true" });
      assert.equal(moved.status, 200, moved.text);
    });
    try {
      await checkRestored(srv, id, sid, dir);
      const info = await srv.api("GET", `/sandboxes/${id}`);
      assert.equal(info.json.tier, "auto");
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("tier auto, still on the nano tier: the same (its nano history is saved), and it comes back on nano", async () => {
    const dir = stateDir();
    const { srv, id, sid } = await roundTrip(dir, { tier: "auto", seed: 5 });
    try {
      assert.equal((await srv.api("GET", `/sandboxes/${id}`)).json.current, "nano");
      await checkRestored(srv, id, sid, dir);
      const info = await srv.api("GET", `/sandboxes/${id}`);
      assert.deepEqual([info.json.tier, info.json.current], ["auto", "nano"]);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("tier auto on the nano tier: paused at idle and written to disk, resumed by the next request; after a restart it is back, and can still move to the heavy tier", async () => {
    const dir = stateDir();
    let srv = await start(dir);
    try {
      const c = await srv.api("POST", "/sandboxes", { tier: "auto", backend: "gvisor", idleTimeoutMs: 1000 });
      assert.equal(c.status, 201, c.text);
      const id = c.json.id as string;
      assert.equal((await srv.api("POST", `/sandboxes/${id}/run`, { code: "x = 41\nopen('/home/user/f.txt', 'w').write('saved')" })).status, 200);
      const waitPaused = async () => {
        let status = "";
        for (let i = 0; i < 100 && status !== "paused"; i++) {
          await new Promise((r) => setTimeout(r, 100));
          status = (await srv.api("GET", `/sandboxes/${id}`)).json.status;
        }
        assert.equal(status, "paused", `paused at idle, not killed: ${srv.stderr()}`);
      };
      await waitPaused();
      // The status turns "paused" as the sandbox stops; the state directory's copy is renamed into place just after.
      const meta = path.join(dir, "paused", id, "meta.json");
      for (let i = 0; i < 100 && !fs.existsSync(meta); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(fs.existsSync(meta), "written to the state dir");
      const back = await srv.api("POST", `/sandboxes/${id}/run`, { code: "x += 1\n(x, open('/home/user/f.txt').read())" });
      assert.deepEqual([back.status, back.json.tier, back.json.value], [200, "nano", "(42, 'saved')"], back.text);
      assert.equal((await srv.api("GET", `/sandboxes/${id}`)).json.status, "running");
      await waitPaused();
      await stop(srv);
      srv = await start(dir);
      const info = await srv.api("GET", `/sandboxes/${id}`);
      assert.deepEqual([info.status, info.json.status, info.json.tier, info.json.current], [200, "paused", "auto", "nano"], info.text);
      const again = await srv.api("POST", `/sandboxes/${id}/run`, { code: "x" });
      assert.deepEqual([again.status, again.json.tier, again.json.value], [200, "nano", "42"], again.text);
      if (!skipHeavy) {
        await ensureImage();
        const moved = await srv.api("POST", `/sandboxes/${id}/run`, { code: "import subprocess\nx + 1" });
        assert.deepEqual([moved.status, moved.json.tier, moved.json.value], [200, "heavy", "43"], moved.text);
        const cat = await srv.api("POST", `/sandboxes/${id}/commands`, { cmd: "cat /home/user/f.txt" });
        assert.equal(cat.json.stdout, "saved", cat.text);
      }
      assert.equal((await srv.api("DELETE", `/sandboxes/${id}`)).status, 204);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("a stored sandbox or snapshot whose mount is not under this start's --mount-root is refused", async () => {
    const dir = stateDir();
    const allowed = stateDir();
    fs.writeFileSync(path.join(allowed, "data.txt"), "mounted");
    let srv = await start(dir, ["--mount-root", allowed]);
    const c = await srv.api("POST", "/sandboxes", { language: "python", mounts: [{ hostPath: allowed, guestPath: "/home/user/m" }] });
    assert.equal(c.status, 201, c.text);
    const id = c.json.id as string;
    assert.equal((await srv.api("POST", `/sandboxes/${id}/run`, { code: "open('/home/user/m/data.txt').read()" })).json.value, "'mounted'");
    const snap = await srv.api("POST", `/sandboxes/${id}/snapshots`);
    assert.equal(snap.status, 201, snap.text);
    await stop(srv);
    srv = await start(dir, ["--mount-root", stateDir()]);
    try {
      assert.match(srv.stderr(), new RegExp(`skipped paused sandbox "${id}": .*not under a directory this server allows`));
      assert.match(srv.stderr(), new RegExp(`skipped snapshot "${snap.json.id}": .*not under a directory this server allows`));
      assert.equal((await srv.api("GET", `/sandboxes/${id}`)).status, 404);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });

  it("at SIGTERM a busy sandbox and one whose history cannot be replayed are killed; an idle one and a tier auto one on nano are paused", async () => {
    const dir = stateDir();
    let srv = await start(dir);
    const make = async (body: object) => {
      const c = await srv.api("POST", "/sandboxes", body);
      assert.equal(c.status, 201, c.text);
      return c.json.id as string;
    };
    const idle = await make({ language: "python" });
    const busy = await make({ language: "python" });
    const auto = await make({ tier: "auto" });
    // No tier is unsaveable any more; a sandbox is when a cell was stopped part-way (no replay stops it at the same point).
    const stopped = await make({ language: "python" });
    await srv.api("POST", `/sandboxes/${auto}/run`, { code: "a = 1" });
    assert.equal((await srv.api("POST", `/sandboxes/${stopped}/run`, { code: "while True: pass", timeoutMs: 300 })).json.limitHit, "timeoutMs");
    const running = srv.api("POST", `/sandboxes/${busy}/run`, { code: "while True: pass", timeoutMs: 60_000 }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await stop(srv);
    await running;
    assert.ok(Date.now() - t0 < 30_000, "the busy sandbox does not hold the shutdown up");
    assert.match(srv.stderr(), new RegExp(`sandbox ${stopped} could not be paused and is killed: .*time limit`));
    assert.doesNotMatch(srv.stderr(), new RegExp(`sandbox ${auto} could not be paused`));
    assert.deepEqual(fs.readdirSync(path.join(dir, "paused")).sort(), [idle, auto].sort());
    srv = await start(dir);
    try {
      assert.deepEqual((await srv.api("GET", "/sandboxes")).json.sandboxes.map((s: { id: string }) => s.id).sort(), [idle, auto].sort());
      const a = await srv.api("POST", `/sandboxes/${auto}/run`, { code: "a + 1" });
      assert.deepEqual([a.status, a.json.tier, a.json.value], [200, "nano", "2"], a.text);
      await stop(srv);
    } finally {
      srv.proc.kill("SIGKILL");
    }
  });
});
