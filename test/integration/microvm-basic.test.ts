// The CLI on the microVM backend (QEMU microvm; TCG where KVM cannot boot the guest). The sandbox
// cases (shared ones, the heavy tier's, and what only a VM has: its accelerator, clones with their
// own entropy and clock) are in test/conformance/, run against the microVM by
// test/conformance/sandbox.test.ts.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { before, describe, it } from "node:test";
import { agentboxEnv } from "../helpers.js";
import { microvm } from "../conformance/heavy.js";

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
