// Where the Python engine's files are, how its worker processes are started (Node flags, the
// permission model's allow-list), and the memory snapshot every worker restores from.
import { createHash } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { TierUnavailableError } from "../../errors.js";
import type { WorkerMount } from "../../protocol/messages.js";
import { cacheDir } from "../cache.js";
import { DIST, lockedDownFlags, PACKAGE_ROOT } from "../pool/flags.js";
import { WorkerProcess, type WorkerSpawnSpec } from "../pool/worker-process.js";

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
  assertBuilt();
  const file = snapshotPath();
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
  const spec: WorkerSpawnSpec = {
    script: WORKER_SCRIPT,
    args: ["serve", PYODIDE_DIR, snap, ...(warm ? ["warm"] : [])],
    nodeFlags: workerFlags(
      [snap, ...mounts.map((m) => m.hostPath)],
      mounts.filter((m) => !m.readOnly).map((m) => m.hostPath),
    ),
    background: warm,
  };
  return new WorkerProcess(spec);
}
