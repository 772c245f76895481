// The nano-tier JavaScript/TypeScript engine, host side: QuickJS in Wasm in a worker process.
// Picks a worker (pooled or fresh) and configures it; running code, the outer limits (deadline →
// interrupt → grace → hard kill, RSS cap, output cap) and file operations are WorkerEngine's.
import { TierUnavailableError } from "../../errors.js";
import type { Limits, Mount } from "../../policy/options.js";
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
}

export class QuickJsWasmEngine extends WorkerEngine {
  static async start(config: JsEngineConfig, pool: WorkerPool | undefined): Promise<QuickJsWasmEngine> {
    if (config.mounts.length > 0) {
      throw new TierUnavailableError(`mounts are not available for language "${config.language}" yet; use the "python" language or copy files in with sb.files.write()`);
    }
    const worker = pool?.take() ?? (await spawnJsWorker());
    const engine = new QuickJsWasmEngine(worker, config);
    await engine.configure(
      WorkerEngine.configureMessage({ seed: config.seed, clock: config.clock, env: config.env, limits: config.limits, mounts: [], language: config.language }),
    );
    return engine;
  }
}
