// Heavy tier on gVisor, for real: commands, the Python REPL, files, limits that keep the
// sandbox alive, pool, snapshots, and that kill() leaves nothing behind.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import {
  FileSystemError,
  InvalidOptionsError,
  Sandbox,
  SandboxClosedError,
  TierUnavailableError,
  TimeoutError,
  listImages,
} from "../../src/index.js";
import type { GvisorEngine } from "../../src/engines/heavy-gvisor/engine.js";
import "../helpers.js";
import { ensureImage, leftovers, skipHeavy, waitFor } from "../heavy.js";

const engineOf = (sb: Sandbox) => (sb as unknown as { engine: GvisorEngine }).engine;
const heavy = { tier: "heavy", pool: false, limits: { memoryMb: 256, timeoutMs: 10_000 } } as const;

describe("heavy tier (gVisor)", { skip: skipHeavy }, () => {
  let sb: Sandbox;
  before(async () => {
    await ensureImage();
    sb = await Sandbox.create(heavy);
  });

  it("runs shell commands with streamed output and exit codes", async () => {
    const chunks: string[] = [];
    const r = await sb.commands.run("python3 -c 'print(6*7)'; echo hi | tr a-z A-Z; echo oops >&2; exit 3", { onStdout: (c) => chunks.push(c) });
    assert.equal(r.exitCode, 3);
    assert.equal(r.stdout, "42\nHI\n");
    assert.equal(r.stderr, "oops\n");
    assert.equal(chunks.join(""), r.stdout);
    const argv = await sb.commands.run(["printf", "%s|", "a b", "$HOME"], { cwd: "/tmp", env: { X: "1" } });
    assert.equal(argv.stdout, "a b|$HOME|");
    const env = await sb.commands.run("echo $HOME $X $(pwd) $(id -u)", { cwd: "/tmp", env: { X: "x1" } });
    assert.equal(env.stdout, "/home/user x1 /tmp 1000\n");
    const stdin = await sb.commands.run("wc -c", { stdin: new Uint8Array([0, 1, 2, 255]) });
    assert.equal(stdin.stdout.trim(), "4");
    const ls = await sb.commands.run("ls -l /usr/bin/python3 && ls /usr/bin | wc -l");
    assert.equal(ls.exitCode, 0, ls.stderr);
    const missing = await sb.commands.run(["/no/such/binary"]);
    assert.equal(missing.exitCode, 127);
    const killed = await sb.commands.run("kill -9 $$");
    assert.equal(killed.exitCode, 137);
    assert.equal(killed.signal, "SIGKILL");
  });

  it("runCode has the nano tier's REPL semantics", async () => {
    await sb.runCode("x = 41");
    const r = await sb.runCode("import sqlite3, platform\nprint(platform.system())\nx + 1");
    assert.equal(r.value, "42");
    assert.equal(r.stdout, "Linux\n");
    assert.equal(r.exitCode, 0);
    const none = await sb.runCode("y = None\ny");
    assert.equal(none.value, undefined);
    const e = await sb.runCode("def f():\n    raise ValueError('bad')\nf()");
    assert.equal(e.exitCode, 1);
    assert.equal(e.error?.name, "ValueError");
    assert.equal(e.error?.message, "bad");
    assert.match(e.error!.traceback, /File "<cell-\d+>", line 2, in f/);
    assert.doesNotMatch(e.error!.traceback, /agent\.py/);
    const intr = await sb.runCode("import time\ntime.sleep(30)", { timeoutMs: 300 });
    assert.equal(intr.error?.name, "KeyboardInterrupt");
    assert.doesNotMatch(intr.error!.traceback, /agent\.py/);
    const syn = await sb.runCode("def (");
    assert.equal(syn.error?.name, "SyntaxError");
    const mixed = await sb.runCode("import os, sys\nprint('a')\nsys.stdout.flush()\nos.system('echo from-a-child')\n'v'");
    assert.equal(mixed.value, "'v'");
    assert.match(mixed.stdout, /a\n/);
  });

  it("files: binary-safe, sorted listings, errors, read-only root", async () => {
    const bytes = new Uint8Array(256).map((_, i) => i);
    await sb.files.write("/home/user/d/bin.dat", bytes);
    assert.deepEqual(await sb.files.read("/home/user/d/bin.dat", { format: "bytes" }), bytes);
    await sb.files.write("/home/user/d/b.txt", "héllo");
    await sb.files.write("/home/user/d/B.txt", "x");
    await sb.files.write("/home/user/d/a.txt", "x");
    await sb.files.makeDir("/home/user/d/sub");
    const names = (await sb.files.list("/home/user/d")).map((e) => `${e.name}:${e.type}`);
    assert.deepEqual(names, ["B.txt:file", "a.txt:file", "b.txt:file", "bin.dat:file", "sub:dir"]);
    assert.equal(await sb.files.read("/home/user/d/b.txt"), "héllo");
    const seen = await sb.commands.run("cat /home/user/d/b.txt; python3 -c \"print(open('/home/user/d/bin.dat','rb').read()[255])\"");
    assert.equal(seen.stdout, "héllo255\n");
    assert.equal(await sb.files.exists("/home/user/d/../d/a.txt"), true);
    await sb.files.remove("/home/user/d");
    assert.equal(await sb.files.exists("/home/user/d"), false);
    await assert.rejects(sb.files.read("/home/user/nope"), (e: unknown) => e instanceof FileSystemError && e.errno === "ENOENT");
    await assert.rejects(sb.files.write("/usr/evil", "x"), (e: unknown) => e instanceof FileSystemError && ["EROFS", "EACCES"].includes(e.errno));
    await assert.rejects(async () => sb.files.write("relative", "x"), InvalidOptionsError);
  });

  it("a command past its timeout is killed with TimeoutError; the sandbox lives on", async () => {
    const t0 = Date.now();
    await assert.rejects(sb.commands.run("sleep 30", { timeoutMs: 500 }), (e: unknown) => e instanceof TimeoutError && e.value === 500);
    assert.ok(Date.now() - t0 < 5000);
    assert.equal((await sb.commands.run("echo alive")).stdout, "alive\n");
  });

  it("runCode timeouts: interrupt first, then a REPL restart; the sandbox lives on", async () => {
    const soft = await sb.runCode("import time\nwhile True: time.sleep(0.01)", { timeoutMs: 400 });
    assert.equal(soft.limitHit, "timeoutMs");
    assert.equal(soft.error?.name, "KeyboardInterrupt");
    await sb.runCode("kept = 1");
    await assert.rejects(sb.runCode("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: time.sleep(0.01)", { timeoutMs: 300 }), TimeoutError);
    assert.equal(sb.closed, false);
    const after = await sb.runCode("'kept' in globals()");
    assert.equal(after.value, "False"); // the REPL was restarted
    assert.equal((await sb.runCode("1 + 1")).value, "2");
  });

  it("kill() removes the container, its processes, state dir and cgroups", async () => {
    const s = await Sandbox.create(heavy);
    const res = engineOf(s).resources;
    assert.ok(res.cgroupDirs.length > 0);
    await s.commands.run("sleep 100 & true");
    await s.kill();
    await s.kill(); // idempotent
    assert.deepEqual(leftovers(res), { processes: [], dir: false, cgroups: [] });
    await assert.rejects(s.commands.run("true"), SandboxClosedError);
  });

  it("pooled sandboxes start with the agent ready", async () => {
    await Sandbox.configurePool({ size: 1 });
    const first = await Sandbox.create({ ...heavy, pool: true }); // creates the pool
    await first.kill();
    await Sandbox.configurePool({ size: 1, wait: true });
    const t0 = performance.now();
    const s = await Sandbox.create({ ...heavy, pool: true, env: { WHO: "pooled" } });
    const r = await s.commands.run("echo $WHO");
    const ms = performance.now() - t0;
    assert.equal(r.stdout, "pooled\n");
    assert.equal((await s.runCode("import os; os.environ['WHO']")).value, "'pooled'");
    await s.kill();
    await Sandbox.shutdownPool();
    await Sandbox.configurePool({ size: 0 });
    assert.ok(ms < 2000, `pooled create + command took ${ms} ms`);
  });

  it("snapshot() and Sandbox.restore(): both keep running, restorable many times", async () => {
    const a = await Sandbox.create(heavy);
    await a.runCode("counter = 10");
    await a.files.write("/home/user/state.txt", "saved");
    const snap = await a.snapshot();
    await a.runCode("counter += 1");
    const b = await Sandbox.restore(snap);
    const c = await Sandbox.restore(snap);
    await b.runCode("counter += 5");
    assert.equal((await a.runCode("counter")).value, "11");
    assert.equal((await b.runCode("counter")).value, "15");
    assert.equal((await c.runCode("counter")).value, "10");
    assert.equal(await c.files.read("/home/user/state.txt"), "saved");
    assert.equal((await c.commands.run("cat state.txt")).stdout, "saved");
    const resources = [a, b, c].map((s) => engineOf(s).resources);
    await Promise.all([a.kill(), b.kill(), c.kill()]);
    await snap.remove();
    await assert.rejects(Sandbox.restore(snap));
    for (const r of resources) assert.deepEqual(leftovers(r), { processes: [], dir: false, cgroups: [] });
  });

  it("validates heavy-tier options and refuses what is not built", async () => {
    await assert.rejects(Sandbox.create({ tier: "heavy", limits: { cpus: 0 } }), (e: unknown) => e instanceof InvalidOptionsError && /limits\.cpus/.test(e.message));
    await assert.rejects(Sandbox.create({ tier: "heavy", limits: { diskMb: 1.5 } }), (e: unknown) => e instanceof InvalidOptionsError && /limits\.diskMb/.test(e.message));
    await assert.rejects(Sandbox.create({ tier: "heavy", packages: ["Not A Package"] }), InvalidOptionsError);
    await assert.rejects(Sandbox.create({ tier: "heavy", packages: ["python3-numpy"] }), (e: unknown) => e instanceof TierUnavailableError && /image build --packages python3-numpy/.test(e.message));
    assert.ok(listImages().length >= 1);
  });

  it("the nano tier refuses commands.run and snapshot() clearly", async () => {
    await using nano = await Sandbox.create({ pool: false });
    await assert.rejects(nano.commands.run("true"), (e: unknown) => e instanceof TierUnavailableError && /tier: "heavy"/.test(e.message));
    await assert.rejects(nano.snapshot(), TierUnavailableError);
  });

  it("the long-lived sandbox ends cleanly", async () => {
    const res = engineOf(sb).resources;
    await sb.kill();
    assert.ok(await waitFor(() => leftovers(res).processes.length === 0));
    assert.deepEqual(leftovers(res), { processes: [], dir: false, cgroups: [] });
  });
});
