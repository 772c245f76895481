// How every nano-tier worker process is started: the package's own paths and the Node flags that
// lock a worker down (no code generation from strings, the permission model with read access to
// the engine's own files only, a JS heap cap). Shared by the Wasm engines.
import path from "node:path";
import { fileURLToPath } from "node:url";

/** Package root: this file sits at {src,dist}/engines/pool/, three levels below it. */
export const PACKAGE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const DIST = path.join(PACKAGE_ROOT, "dist");

/** JS heap of a worker; the guest's memory is Wasm memory, capped separately. */
const WORKER_HEAP_MB = 192;

const major = Number(process.versions.node.split(".")[0]);
const PERMISSION_FLAG = major >= 22 ? "--permission" : "--experimental-permission";

/** Node flags for a worker: no code generation; read-only access to `read` (plus our dist/). */
export function lockedDownFlags(read: string[], write: string[] = []): string[] {
  const all = [DIST, path.join(PACKAGE_ROOT, "package.json"), ...read];
  return [
    "--disallow-code-generation-from-strings",
    PERMISSION_FLAG,
    ...all.map((p) => `--allow-fs-read=${p}`),
    ...write.map((p) => `--allow-fs-write=${p}`),
    "--allow-worker", // the interrupter thread
    `--max-old-space-size=${WORKER_HEAP_MB}`,
    "--no-warnings",
    // JS optimisation and GC on the main thread only: with V8's concurrent helpers a cold worker's
    // first request waited 70-100 ms behind them on a 2-core machine; steady-state speed of guest
    // code is the same (measured). Wasm tier-up still runs on a helper thread.
    "--single-threaded",
  ];
}
