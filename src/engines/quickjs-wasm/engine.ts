// The nano-tier JavaScript/TypeScript engine, host side: QuickJS in Wasm in a worker process.
// Picks a worker (pooled, or fresh for mounts: a worker's permissions are fixed at spawn) and
// configures it; running code, the outer limits (deadline → interrupt → grace → hard kill, RSS
// cap, output cap) and file operations are WorkerEngine's.
import fs from "node:fs";
import { InvalidOptionsError } from "../../errors.js";
import type { NetworkGrant } from "../../policy/network.js";
import type { NanoLimits as Limits, Mount } from "../../policy/options.js";
import type { SecretSet } from "../../policy/secrets.js";
import type { WorkerPool } from "../pool/pool.js";
import { WorkerEngine } from "../pool/worker-engine.js";
import { spawnJsWorker } from "./runtime.js";

export interface JsEngineConfig {
  language: "javascript" | "typescript";
  seed: number;
  clock: "virtual" | "real";
  env: Record<string, string>;
  limits: Limits;
  mounts: Mount[];
  /** A guest `fetch` through the host, limited to these hosts; absent: no network. */
  network?: NetworkGrant | undefined;
  /** `network.secrets` with the placeholders `env` holds; absent: none. */
  secrets?: SecretSet | undefined;
}

export class QuickJsWasmEngine extends WorkerEngine {
  static async start(config: JsEngineConfig, pool: WorkerPool | undefined): Promise<QuickJsWasmEngine> {
    const mounts = config.mounts.map((m, i) => ({ ...m, hostPath: realDir(m.hostPath, i) }));
    const fromPool = mounts.length === 0 ? pool?.take() : undefined;
    const worker = fromPool ?? (await spawnJsWorker(false, mounts));
    const engine = new QuickJsWasmEngine(worker, config);
    await engine.configure(
      WorkerEngine.configureMessage({
        seed: config.seed,
        clock: config.clock,
        env: config.env,
        limits: config.limits,
        mounts,
        language: config.language,
        ...(config.network ? { network: { maxRequestBytes: config.network.maxRequestBytes } } : {}),
      }),
      fromPool !== undefined,
    );
    return engine;
  }
}

/**
 * A mount's host directory as a real path: the permission grant and the worker's containment
 * checks both work on it, so a symlinked hostPath grants what it points to, and only that.
 */
function realDir(hostPath: string, i: number): string {
  let real: string;
  try {
    real = fs.realpathSync(hostPath);
  } catch (e) {
    throw new InvalidOptionsError([{ path: `mounts.${i}.hostPath`, message: `cannot be opened: ${(e as Error).message}` }]);
  }
  if (!fs.statSync(real).isDirectory()) throw new InvalidOptionsError([{ path: `mounts.${i}.hostPath`, message: "must be a directory" }]);
  return real;
}
