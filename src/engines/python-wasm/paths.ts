// Where the Python engine's files are, the memory snapshot's file name, and the command line of a
// worker that restores it. Imports only leaves: the one-shot CLI starts its worker from these
// before it loads the rest of the library (pool/spawn.ts).
import { createHash } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { TierUnavailableError } from "../../errors.js";
import type { WorkerMount } from "../../protocol/messages.js";
import { cacheDir } from "../cache.js";
import { DIST, lockedDownFlags, PACKAGE_ROOT } from "../pool/flags.js";
import type { WorkerSpawnSpec } from "../pool/spawn.js";

export { PACKAGE_ROOT };
export const WORKER_SCRIPT = path.join(DIST, "worker", "python-worker.js");
export const PYODIDE_DIR = path.dirname(createRequire(import.meta.url).resolve("pyodide/package.json"));
export const PYODIDE_VERSION = (JSON.parse(fs.readFileSync(path.join(PYODIDE_DIR, "package.json"), "utf8")) as { version: string }).version;

/** The snapshot file name carries everything that changes its contents. */
export function snapshotPath(): string {
  assertBuilt();
  const h = createHash("sha256")
    .update(PYODIDE_VERSION)
    .update(process.version)
    .update(fs.readFileSync(path.join(DIST, "worker", "python-guest.js")))
    .update(fs.readFileSync(path.join(DIST, "worker", "display.py")))
    .update(fs.readFileSync(path.join(DIST, "worker", "python", "network.guest.py")))
    .update(fs.readFileSync(WORKER_SCRIPT))
    .digest("hex")
    .slice(0, 16);
  return path.join(cacheDir(), `pyodide-${PYODIDE_VERSION}-${h}.snapshot`);
}

function assertBuilt(): void {
  if (!fs.existsSync(WORKER_SCRIPT)) {
    throw new TierUnavailableError(`the worker script ${WORKER_SCRIPT} is missing; run \`npm run build\` in ${PACKAGE_ROOT}`);
  }
}

/** Node flags for a Python worker: read-only access to Pyodide, our dist/ and `extraRead`. */
export function workerFlags(extraRead: string[] = [], extraWrite: string[] = []): string[] {
  return lockedDownFlags([PYODIDE_DIR, ...extraRead], extraWrite);
}

/**
 * A worker that restores snapshot `snap`; `mounts` widen its permissions to those paths. `warm`
 * (pool workers, which wait anyway): it exercises the interpreter before it reports ready, and
 * boots in the background.
 */
export function pythonServeSpec(snap: string, mounts: WorkerMount[], warm: boolean): WorkerSpawnSpec {
  return {
    script: WORKER_SCRIPT,
    args: ["serve", PYODIDE_DIR, snap, ...(warm ? ["warm"] : [])],
    nodeFlags: workerFlags(
      [snap, ...mounts.map((m) => m.hostPath)],
      mounts.filter((m) => !m.readOnly).map((m) => m.hostPath),
    ),
    background: warm,
  };
}
