// Shared set-up of the heavy-tier tests: whether gVisor can run here (else the tests skip with
// the reason printed), the one image every heavy test uses (built once, cached on disk), and
// checks that a sandbox left nothing behind.
import fs from "node:fs";
import { execFileSync } from "node:child_process";
import { gvisorUnavailableReason } from "../src/engines/heavy-gvisor/box.js";
import { buildImage } from "../src/index.js";

const reason = gvisorUnavailableReason();
if (reason) console.log(`# heavy-tier tests skipped: ${reason}`);

/** Pass as the `skip` option of describe(): the reason when gVisor cannot run here. */
export const skipHeavy: string | false = reason ?? false;

let image: Promise<unknown> | undefined;
/** Build the default image once per test process (a no-op when it is cached). */
export function ensureImage(): Promise<unknown> {
  image ??= buildImage({ onProgress: (l) => console.log(`# image: ${l}`) });
  return image;
}

let dataImage: Promise<unknown> | undefined;
/** Build the data-science image (`--preset data`) once per test process (a no-op when cached). */
export function ensureDataImage(): Promise<unknown> {
  dataImage ??= buildImage({ preset: "data", onProgress: (l) => console.log(`# data image: ${l}`) });
  return dataImage;
}

/** runsc processes whose command line names this container id. */
export function runscProcesses(containerId: string): string[] {
  let out = "";
  try {
    out = execFileSync("ps", ["-eo", "pid,args"], { encoding: "utf8" });
  } catch {
    return [];
  }
  return out.split("\n").filter((l) => l.includes("runsc") && l.includes(containerId));
}

export interface Leftovers {
  processes: string[];
  dir: boolean;
  cgroups: string[];
}

/** What of a killed sandbox is still there (should be nothing). */
export function leftovers(r: { containerId: string; dir: string; cgroupDirs: string[] }): Leftovers {
  return { processes: runscProcesses(r.containerId), dir: fs.existsSync(r.dir), cgroups: r.cgroupDirs.filter((d) => fs.existsSync(d)) };
}

export async function waitFor(cond: () => boolean, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}
