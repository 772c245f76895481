// Where the Python engine's files are, how its worker processes are started (Node flags, the
// permission model's allow-list), and the memory snapshot every worker restores from.
import fs from "node:fs";
import path from "node:path";
import { TierUnavailableError } from "../../errors.js";
import type { WorkerMount } from "../../protocol/messages.js";
import { WorkerProcess } from "../pool/worker-process.js";
import { PYODIDE_DIR, pythonServeSpec, snapshotPath, WORKER_SCRIPT, workerFlags } from "./paths.js";

export { PACKAGE_ROOT, PYODIDE_DIR, PYODIDE_VERSION, pythonServeSpec, snapshotPath, WORKER_SCRIPT, workerFlags } from "./paths.js";

let snapshotReady: Promise<string> | undefined;

/** Make the memory snapshot once per machine (cached on disk), once per process at most. */
export function ensureSnapshot(): Promise<string> {
  snapshotReady ??= makeSnapshot().catch((e: unknown) => {
    snapshotReady = undefined;
    throw e;
  });
  return snapshotReady;
}

async function makeSnapshot(): Promise<string> {
  const file = snapshotPath(); // throws when the build is missing
  if (fs.existsSync(file)) {
    touch(file);
    return file;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const w = new WorkerProcess({
    script: WORKER_SCRIPT,
    args: ["make-snapshot", PYODIDE_DIR, file],
    nodeFlags: workerFlags([path.dirname(file)], [path.dirname(file)]),
  });
  try {
    await w.ready;
  } catch (e) {
    throw new TierUnavailableError(`could not build the Python snapshot: ${(e as Error).message}`);
  }
  await w.exited$();
  if (!fs.existsSync(file)) throw new TierUnavailableError(`the Python snapshot was not written to ${file}`);
  pruneSnapshots(file);
  return file;
}

/** Snapshots of other versions unused this long are deleted when a new one is made (31 MB each). */
const STALE_SNAPSHOT_MS = 24 * 3600 * 1000;

function touch(file: string): void {
  const now = new Date();
  try {
    fs.utimesSync(file, now, now); // marks it in use, so pruneSnapshots() elsewhere keeps it
  } catch {
    // a read-only cache still works
  }
}

/** @internal exported for tests */
export function pruneSnapshots(keep: string): void {
  const dir = path.dirname(keep);
  for (const name of fs.readdirSync(dir)) {
    const full = path.join(dir, name);
    if (full === keep || !/^pyodide-.*\.snapshot$/.test(name)) continue;
    try {
      if (Date.now() - fs.statSync(full).mtimeMs > STALE_SNAPSHOT_MS) fs.rmSync(full, { force: true });
    } catch {
      // raced with another process: fine
    }
  }
}

/** Start a worker that restores the snapshot; `mounts` widen its permissions to those paths. */
/** `warm`: exercise the interpreter before reporting ready (pool workers, which wait anyway). */
export async function spawnPythonWorker(mounts: WorkerMount[] = [], warm = false): Promise<WorkerProcess> {
  const snap = await ensureSnapshot();
  return new WorkerProcess(pythonServeSpec(snap, mounts, warm));
}
