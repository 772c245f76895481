// Where the JavaScript engine's files are and how its worker processes are started: QuickJS
// (quickjs-emscripten-core with the release-sync Wasm variant) and Sucrase for TypeScript, each
// granted read-only by the permission model, nothing else of the host.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { TierUnavailableError } from "../../errors.js";
import type { WorkerMount } from "../../protocol/messages.js";
import { DIST, lockedDownFlags, PACKAGE_ROOT } from "../pool/flags.js";
import { WorkerProcess } from "../pool/worker-process.js";

export const JS_WORKER_SCRIPT = path.join(DIST, "worker", "js-worker.js");

const require = createRequire(import.meta.url);

/** The directory of installed package `name` (found from `from`, a directory or file). */
function packageDir(name: string, from: string = PACKAGE_ROOT): string {
  const req = createRequire(path.join(from, "noop.js"));
  let dir = path.dirname(req.resolve(name));
  for (;;) {
    const pj = path.join(dir, "package.json");
    if (fs.existsSync(pj) && (JSON.parse(fs.readFileSync(pj, "utf8")) as { name?: string }).name === name) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the package directory of ${name}`);
    dir = up;
  }
}

/** Read-only grants: the packages the worker loads and, for each, the packages they import. */
const PACKAGES: Record<string, string[]> = {
  "quickjs-emscripten-core": ["@jitl/quickjs-ffi-types"],
  "@jitl/quickjs-wasmfile-release-sync": ["@jitl/quickjs-ffi-types"],
  acorn: [],
  sucrase: ["lines-and-columns", "ts-interface-checker", "@jridgewell/gen-mapping"],
  "@jridgewell/gen-mapping": ["@jridgewell/sourcemap-codec", "@jridgewell/trace-mapping", "@jridgewell/set-array"],
  "@jridgewell/trace-mapping": ["@jridgewell/resolve-uri", "@jridgewell/sourcemap-codec"],
};

interface Paths {
  read: string[];
  core: string;
  variant: string;
  sucrase: string;
  acorn: string;
}

let paths: Paths | undefined;

function resolvePaths(): Paths {
  if (paths) return paths;
  if (!fs.existsSync(JS_WORKER_SCRIPT)) {
    throw new TierUnavailableError(`the worker script ${JS_WORKER_SCRIPT} is missing; run \`npm run build\` in ${PACKAGE_ROOT}`);
  }
  const dirs = new Map<string, string>();
  const visit = (name: string, from: string) => {
    if (dirs.has(name)) return;
    let dir: string;
    try {
      dir = packageDir(name, from);
    } catch {
      return; // an optional dependency that is not installed (the worker fails loudly if it needed it)
    }
    dirs.set(name, dir);
    for (const dep of PACKAGES[name] ?? []) visit(dep, dir);
  };
  for (const name of ["quickjs-emscripten-core", "@jitl/quickjs-wasmfile-release-sync", "acorn", "sucrase"]) visit(name, PACKAGE_ROOT);
  const need = (name: string) => {
    const d = dirs.get(name);
    if (!d) throw new TierUnavailableError(`the JavaScript engine needs the npm package ${name}; run \`npm install\` in ${PACKAGE_ROOT}`);
    return d;
  };
  paths = {
    read: [...dirs.values()],
    core: path.join(need("quickjs-emscripten-core"), "dist", "index.mjs"),
    variant: path.join(need("@jitl/quickjs-wasmfile-release-sync"), "dist", "index.mjs"),
    sucrase: require.resolve("sucrase"),
    acorn: require.resolve("acorn"),
  };
  need("acorn");
  return paths;
}

/**
 * Start a JavaScript worker. `warm`: exercise its paths before reporting ready (pool workers).
 * `mounts` widen its permissions to those host directories (write only for read-write ones).
 */
export async function spawnJsWorker(warm = false, mounts: WorkerMount[] = []): Promise<WorkerProcess> {
  const p = resolvePaths();
  return new WorkerProcess({
    script: JS_WORKER_SCRIPT,
    args: ["serve", p.core, p.variant, p.sucrase, p.acorn, ...(warm ? ["warm"] : [])],
    nodeFlags: lockedDownFlags(
      [...p.read, ...mounts.map((m) => m.hostPath)],
      mounts.filter((m) => !m.readOnly).map((m) => m.hostPath),
    ),
    background: warm,
  });
}
