// Picks and starts the engine for a sandbox's tier and language. The one place that knows every
// engine: add a case here when a new one lands.
import fs from "node:fs";
import { InvalidOptionsError, TierUnavailableError } from "../errors.js";
import type { Mount, SandboxOptions } from "../policy/options.js";
import type { Engine } from "./engine.js";
import { GvisorBox } from "./heavy-gvisor/box.js";
import { boxSpec, GvisorEngine, specKey } from "./heavy-gvisor/engine.js";
import { MicrovmEngine, microvmOnKvm } from "./microvm/engine.js";
import { poolFor } from "./pools.js";
import { PythonWasmEngine } from "./python-wasm/engine.js";
import { spawnPythonWorker } from "./python-wasm/runtime.js";
import { QuickJsWasmEngine } from "./quickjs-wasm/engine.js";
import { spawnJsWorker } from "./quickjs-wasm/runtime.js";

/** What every engine gets besides the options: resolved seed, clock and normalised mounts. */
export interface EngineStart {
  options: SandboxOptions;
  seed: number;
  clock: "virtual" | "real";
  mounts: Mount[];
}

export async function startEngine(s: EngineStart): Promise<Engine> {
  const { options: o } = s;
  const common = { seed: s.seed, clock: s.clock, env: o.env, limits: o.limits, mounts: s.mounts };
  const js = o.tier === "nano" && (o.language === "javascript" || o.language === "typescript");
  if (o.network && !js) {
    // Python would need a bridge from its socket layer to the host's fetch; not built (see the README).
    throw new InvalidOptionsError([{ path: "network", message: `a network grant is available on the nano tier for "javascript" and "typescript" only, not tier "${o.tier}" with "${o.language}"` }]);
  }
  if (o.tier === "nano" && o.language === "python") {
    const pool = o.pool ? poolFor("python", () => spawnPythonWorker([], true)) : undefined;
    return PythonWasmEngine.start(common, pool);
  }
  if (o.tier === "nano" && (o.language === "javascript" || o.language === "typescript")) {
    // One pool for both: a worker learns at configure time whether it strips types.
    const pool = o.pool ? poolFor("javascript", () => spawnJsWorker(true)) : undefined;
    return QuickJsWasmEngine.start({ ...common, language: o.language, network: o.network }, pool);
  }
  if (o.tier === "heavy") return startHeavy(s);
  throw new TierUnavailableError(`tier "${o.tier}" with language "${o.language}" is not available in this build`);
}

async function startHeavy(s: EngineStart): Promise<Engine> {
  const { options: o } = s;
  if (o.language !== "python") throw new TierUnavailableError(`the heavy tier's runCode runs Python; language "${o.language}" is not available there (use commands.run)`);
  const mounts = heavyMounts(s.mounts, o.backend);
  // "auto" takes the microVM only where KVM boots it (TCG is for testing) and no mount is asked
  // for (the VM shares no file system with the host); gVisor otherwise.
  if (o.backend === "microvm" || (o.backend === "auto" && mounts.length === 0 && (await microvmOnKvm(o.packages)))) {
    return MicrovmEngine.start({ limits: o.limits, env: o.env, seed: s.seed, packages: o.packages }, o.pool);
  }
  const config = { limits: o.limits, env: o.env, seed: s.seed, packages: o.packages, mounts };
  const spec = boxSpec(config);
  const pool = o.pool && mounts.length === 0 ? poolFor(specKey(spec), () => GvisorBox.start(spec, { warm: true })) : undefined;
  return GvisorEngine.start(config, pool);
}

/**
 * Heavy-tier mounts: gVisor only (a microVM shares no file system with the host, by design),
 * read-only (what a guest writes must stay inside its capped scratch), and only under /home/user
 * or /tmp, whose tmpfs holds the mount point (runsc would otherwise create it in the shared image).
 */
function heavyMounts(mounts: Mount[], backend: SandboxOptions["backend"]): { hostPath: string; guestPath: string }[] {
  if (mounts.length === 0) return [];
  const bad = (i: number, field: string, message: string) => new InvalidOptionsError([{ path: `mounts.${i}${field}`, message }]);
  if (backend === "microvm") throw bad(0, "", "the microVM backend shares no file system with the host; copy files in with sb.files.write");
  return mounts.map((m, i) => {
    if (!m.readOnly) throw bad(i, ".readOnly", "the heavy tier grants read-only mounts only (guest writes stay in its capped scratch)");
    if (!/^\/(home\/user|tmp)\/[^/]/.test(m.guestPath)) throw bad(i, ".guestPath", `must be below /home/user/ or /tmp/, got ${JSON.stringify(m.guestPath)}`);
    let real: string;
    try {
      real = fs.realpathSync(m.hostPath);
      if (!fs.statSync(real).isDirectory()) throw new Error("not a directory");
    } catch (e) {
      throw bad(i, ".hostPath", `${JSON.stringify(m.hostPath)} is not an existing directory (${(e as Error).message})`);
    }
    return { hostPath: real, guestPath: m.guestPath };
  });
}

/** Start one pooled worker of `kind` now, so the first sandbox of that kind does not wait. */
export function prewarm(kind: "python"): void {
  if (kind === "python") poolFor("python", () => spawnPythonWorker([], true))?.fill();
}
