// Shared set-up of the microVM tests: whether QEMU can run here (else the tests skip with the
// reason printed), the one artefact set every microVM test uses (built once, cached on disk,
// like the base snapshot the first sandbox makes), and checks that a VM left nothing behind.
import fs from "node:fs";
import { qemuUnavailableReason } from "../src/engines/microvm/qemu.js";
import { buildMicrovmArtefacts } from "../src/index.js";

function why(): string | undefined {
  const q = qemuUnavailableReason();
  if (q) return q;
  if (process.getuid?.() !== 0) return "the microVM backend needs root (cgroups, network namespaces)";
  return undefined;
}
const reason = why();
if (reason) console.log(`# microVM tests skipped: ${reason}`);

/** Pass as the `skip` option of describe(): the reason when QEMU cannot run here. */
export const skipMicrovm: string | false = reason ?? false;

let built: Promise<unknown> | undefined;
/** Build the image and the microVM artefacts once per test process (a no-op when cached). */
export function ensureArtefacts(): Promise<unknown> {
  built ??= buildMicrovmArtefacts({ onProgress: (l) => console.log(`# microvm: ${l}`) });
  return built;
}

export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** What of a killed VM is still there (should be nothing). */
export function leftovers(r: { dir: string; cgroupDirs: string[]; pid: number | undefined }): { process: boolean; dir: boolean; cgroups: string[] } {
  return { process: alive(r.pid), dir: fs.existsSync(r.dir), cgroups: r.cgroupDirs.filter((d) => fs.existsSync(d)) };
}

export const clean = { process: false, dir: false, cgroups: [] };

export async function waitFor(cond: () => boolean, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
