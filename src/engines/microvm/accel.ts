// Which accelerator runs the guest: KVM where the host's KVM can boot our (stock Debian) kernel,
// TCG software emulation otherwise. `/dev/kvm` existing is not enough (a nested paravirtual KVM
// such as kvm_pvm cannot run a stock kernel), so the answer comes from a probe boot: the guest
// kernel with the initramfs, whose init reboots at once; QEMU then exits on its own (-no-reboot).
// The answer is cached per kernel, host kernel and QEMU binary; AGENTBOX_MICROVM_ACCEL overrides.
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { MicrovmArtefacts } from "./artefacts.js";
import { microvmDir } from "./artefacts.js";
import type { Accel } from "./hypervisor.js";
import { QemuHypervisor, qemuBinary } from "./qemu.js";

const PROBE_TIMEOUT_MS = 15_000;
const known = new Map<string, Promise<AccelChoice>>();

export interface AccelChoice {
  accel: Accel;
  /** Why KVM is not used (absent, not accessible, or the probe boot failed). */
  reason?: string;
}

export function detectAccel(a: MicrovmArtefacts): Promise<AccelChoice> {
  const forced = process.env.AGENTBOX_MICROVM_ACCEL;
  if (forced === "tcg") return Promise.resolve({ accel: "tcg", reason: "AGENTBOX_MICROVM_ACCEL=tcg" });
  if (forced === "kvm") return Promise.resolve({ accel: "kvm" });
  const key = createHash("sha256")
    .update(JSON.stringify([a.kernelPackage, os.release(), fs.statSync(qemuBinary()).mtimeMs]))
    .digest("hex")
    .slice(0, 16);
  let p = known.get(key);
  if (!p) {
    p = probeCached(a, key);
    known.set(key, p);
  }
  return p;
}

async function probeCached(a: MicrovmArtefacts, key: string): Promise<AccelChoice> {
  const file = path.join(microvmDir(), `accel-${key}.json`);
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as AccelChoice;
  } catch {
    // not probed yet
  }
  const choice = await probe(a);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(choice) + "\n");
  return choice;
}

async function probe(a: MicrovmArtefacts): Promise<AccelChoice> {
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { accel: "tcg", reason: "/dev/kvm is absent or not accessible" };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-kvm-probe-"));
  try {
    const hv = new QemuHypervisor(["agentbox.probe=1"]);
    const vm = await hv.launch({ spec: { artefacts: a, accel: "kvm", memoryMb: 128, vcpus: 1, cpus: 1, diskMb: 16 }, dir });
    const exit = await Promise.race([vm.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), PROBE_TIMEOUT_MS))]);
    if (!exit) {
      await vm.kill();
      return { accel: "tcg", reason: `KVM did not boot the guest kernel within ${PROBE_TIMEOUT_MS} ms (e.g. a nested paravirtual KVM that needs a special guest kernel)` };
    }
    if (exit.code === 0 && exit.guestReason === "guest-reset") return { accel: "kvm" };
    return { accel: "tcg", reason: `KVM probe boot failed (${exit.guestReason ?? `exit ${exit.code}`}${exit.stderr ? `: ${exit.stderr.trim().split("\n").slice(-1)[0]}` : ""})` };
  } catch (e) {
    return { accel: "tcg", reason: `KVM probe boot failed: ${(e as Error).message}` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
