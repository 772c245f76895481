// The heavy tier on the microVM backend (QEMU microvm; TCG where KVM cannot boot the guest):
// commands, the Python REPL, files, limits, snapshots restored into independent clones, and a
// clean end. Every sandbox is restored from the base snapshot made by the first one.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Sandbox, TimeoutError } from "../../src/index.js";
import type { MicrovmEngine } from "../../src/engines/microvm/engine.js";
import "../helpers.js";
import { clean, ensureArtefacts, leftovers, skipMicrovm } from "../microvm.js";

const engineOf = (sb: Sandbox) => (sb as unknown as { engine: MicrovmEngine }).engine;
const opts = { tier: "heavy", backend: "microvm", pool: false, limits: { memoryMb: 256, timeoutMs: 20_000 } } as const;

describe("heavy tier on a microVM", { skip: skipMicrovm }, () => {
  let sb: Sandbox;
  before(async () => {
    await ensureArtefacts();
    sb = await Sandbox.create(opts);
  });
  after(async () => {
    await sb?.kill();
  });

  it("reports its backend and accelerator", () => {
    const info = sb.info;
    assert.equal(info.tier, "heavy");
    assert.ok(info.tier === "heavy" && info.backend === "microvm");
    assert.ok(info.accel === "kvm" || info.accel === "tcg");
    if (info.accel === "tcg") assert.ok(info.accelReason, "TCG comes with the reason KVM is not used");
  });

  it("runs commands as the unprivileged user in a real Linux kernel", async () => {
    const r = await sb.commands.run("python3 -c 'print(6*7)'; id -u; uname -s; echo hi | tr a-z A-Z");
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, "42\n1000\nLinux\nHI\n");
    const bad = await sb.commands.run("exit 3");
    assert.equal(bad.exitCode, 3);
    let streamed = "";
    const s = await sb.commands.run(["sh", "-c", "echo a; echo b >&2"], { onStdout: (c) => (streamed += c) });
    assert.equal(streamed, "a\n");
    assert.equal(s.stderr, "b\n");
  });

  it("keeps REPL state across runCode calls", async () => {
    await sb.runCode("x = 41");
    const r = await sb.runCode("import sqlite3, platform\nprint(platform.system())\nx + 1");
    assert.equal(r.value, "42");
    assert.equal(r.stdout, "Linux\n");
    const e = await sb.runCode("1/0");
    assert.equal(e.error?.name, "ZeroDivisionError");
  });

  it("moves files in and out, binary-safe, listing sorted", async () => {
    const bytes = new Uint8Array(70_000).map((_, i) => (i * 7) & 0xff);
    await sb.files.write("/home/user/b.bin", bytes);
    await sb.files.write("/home/user/a.txt", "hello");
    assert.deepEqual(await sb.files.read("/home/user/b.bin", { format: "bytes" }), bytes);
    const names = (await sb.files.list("/home/user")).map((e) => e.name);
    assert.deepEqual(names, [...names].sort());
    assert.ok(names.includes("a.txt") && names.includes("b.bin"));
    await sb.files.remove("/home/user/a.txt");
    assert.equal(await sb.files.exists("/home/user/a.txt"), false);
    const r = await sb.commands.run("wc -c < /home/user/b.bin");
    assert.equal(r.stdout.trim(), "70000");
  });

  it("a command over its time limit is killed and the sandbox lives on", async () => {
    await assert.rejects(sb.commands.run("sleep 30", { timeoutMs: 1000 }), TimeoutError);
    const r = await sb.commands.run("echo still here");
    assert.equal(r.stdout, "still here\n");
  });

  it("snapshot: clones keep files and variables, get their own entropy, and all keep running", async () => {
    await sb.runCode("import random\nsaved = 'kept'");
    await sb.files.write("/tmp/state.txt", "on disk");
    const snap = await sb.snapshot();
    try {
      const [c1, c2] = [await Sandbox.restore(snap), await Sandbox.restore(snap)];
      try {
        for (const c of [c1, c2]) {
          assert.equal((await c.runCode("saved")).value, "'kept'");
          assert.equal(await c.files.read("/tmp/state.txt"), "on disk");
          assert.equal(c.info.tier === "heavy" && c.info.backend, "microvm");
        }
        const draw = "import os\nos.urandom(16).hex() + ' ' + str(random.random())";
        const [r1, r2, r0] = [await c1.runCode(draw), await c2.runCode(draw), await sb.runCode(draw)];
        assert.notEqual(r1.value, r2.value, "clones must not share random state");
        assert.notEqual(r1.value, r0.value);
        const clock = await c1.commands.run("date +%s");
        assert.ok(Math.abs(Number(clock.stdout.trim()) - Date.now() / 1000) < 30, "the clone's clock was set from the host");
        await c1.runCode("saved = 'changed in c1'");
        assert.equal((await c2.runCode("saved")).value, "'kept'");
        assert.equal((await sb.runCode("saved")).value, "'kept'");
      } finally {
        await c1.kill();
        await c2.kill();
      }
    } finally {
      await snap.remove();
    }
  });

  it("kill() ends the VM: no QEMU process, cgroup or directory left", async () => {
    const s = await Sandbox.create(opts);
    const res = engineOf(s).resources;
    assert.ok(res.cgroupDirs.length > 0, "the VMM runs in a cgroup");
    assert.equal((await s.commands.run("true")).exitCode, 0);
    await s.kill();
    await s.kill(); // idempotent
    assert.deepEqual(leftovers(res), clean);
  });
});
