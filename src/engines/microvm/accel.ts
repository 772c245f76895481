// Which accelerator runs the guest: KVM where the host's KVM can boot our (stock Debian) kernel
// under the hypervisor, TCG software emulation otherwise. `/dev/kvm` existing is not enough (a
// nested paravirtual KVM such as kvm_pvm cannot run a stock kernel), so the answer comes from the
// hypervisor's probe boot (Hypervisor.probeKvm). The answer is cached per hypervisor identity and
// host kernel, in memory and in the cache directory; AGENTBOX_MICROVM_ACCEL overrides it.
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { MicrovmArtefacts } from "./artefacts.js";
import { microvmDir } from "./artefacts.js";
import type { AccelChoice, Hypervisor } from "./hypervisor.js";

export type { AccelChoice };

const known = new Map<string, Promise<AccelChoice>>();

export function detectAccel(hv: Hypervisor, a: MicrovmArtefacts): Promise<AccelChoice> {
  const forced = process.env.AGENTBOX_MICROVM_ACCEL;
  if (forced === "tcg") return Promise.resolve({ accel: "tcg", reason: "AGENTBOX_MICROVM_ACCEL=tcg" });
  if (forced === "kvm") return Promise.resolve({ accel: "kvm" });
  const key = createHash("sha256")
    .update(JSON.stringify([hv.name, hv.probeIdentity(a), os.release()]))
    .digest("hex")
    .slice(0, 16);
  let p = known.get(key);
  if (!p) {
    p = probeCached(hv, a, key);
    known.set(key, p);
  }
  return p;
}

async function probeCached(hv: Hypervisor, a: MicrovmArtefacts, key: string): Promise<AccelChoice> {
  const file = path.join(microvmDir(), `accel-${key}.json`);
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as AccelChoice;
  } catch {
    // not probed yet
  }
  const choice = await probe(hv, a);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(choice) + "\n");
  return choice;
}

async function probe(hv: Hypervisor, a: MicrovmArtefacts): Promise<AccelChoice> {
  try {
    fs.accessSync("/dev/kvm", fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return { accel: "tcg", reason: "/dev/kvm is absent or not accessible" };
  }
  return hv.probeKvm(a);
}
