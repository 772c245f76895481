// The heavy tier on the microVM backend (QEMU microvm; TCG where KVM cannot boot the guest): the
// shared heavy-tier conformance cases (test/heavy-conformance.ts), then what only a VM has: the
// accelerator it reports and clones that get their own entropy and clock. Every sandbox is
// restored from the one base snapshot the first one makes (same memory, CPUs and disk).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import { agentboxEnv } from "../helpers.js";
import { clean, heavyConformance, microvm } from "../heavy-conformance.js";

const opts = microvm.opts;

describe("heavy tier on a microVM", { skip: microvm.skip }, () => {
  let sb: Sandbox;
  before(async () => {
    await microvm.prepare();
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

  heavyConformance(microvm, () => sb);

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

  it("the long-lived sandbox ends cleanly", async () => {
    const res = microvm.resources(sb);
    await sb.kill();
    assert.deepEqual(microvm.leftovers(res), clean);
  });
});

const BIN = fileURLToPath(new URL("../../bin/agentbox.js", import.meta.url));
/** Run the built CLI (npm test builds dist/ first). */
function cli(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], { env: agentboxEnv(), stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    c.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

describe("the CLI on the microVM backend", { skip: microvm.skip }, () => {
  before(() => microvm.prepare());

  it("image build --backend microvm builds (here: finds) the kernel, initramfs and disk", async () => {
    const r = await cli("image", "build", "--backend", "microvm");
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^[0-9a-f]+ microvm:[0-9a-f]{16}\n$/);
    const bad = await cli("image", "build", "--backend", "firecracker");
    assert.equal(bad.status, 64);
    assert.match(bad.stderr, /--backend: expected gvisor or microvm/);
  });

  it("exec --tier heavy --backend microvm -- CMD runs the command in a VM", async () => {
    const r = await cli("exec", "--tier", "heavy", "--backend", "microvm", "--json", "--", "sh", "-c", "echo $(id -u) $(uname -s); exit 3");
    assert.equal(r.status, 1, r.stderr);
    const out = JSON.parse(r.stdout) as { exitCode: number; stdout: string };
    assert.equal(out.exitCode, 3);
    assert.equal(out.stdout, "1000 Linux\n");
    const bad = await cli("exec", "--backend", "vmware", "--", "true");
    assert.equal(bad.status, 64);
  });

  it("run --tier heavy --backend microvm -c 'print(6*7)' prints 42", async () => {
    const r = await cli("run", "--tier", "heavy", "--backend", "microvm", "-c", "print(6*7)");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "42\n");
    assert.match(r.stderr, /software emulation \(TCG\)|^$/);
  });
});
