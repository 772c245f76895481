// The nano-tier Python engine, host side: picks a worker (pooled or fresh; mounts need a fresh
// one, since a worker's permissions are fixed at spawn) and configures it. Running code, the
// outer limits and file operations are the shared WorkerEngine's.
import type { NetworkGrant } from "../../policy/network.js";
import type { NanoLimits as Limits, Mount } from "../../policy/options.js";
import type { SecretSet } from "../../policy/secrets.js";
import type { WorkerPool } from "../pool/pool.js";
import type { EngineRunOptions, EngineRunResult, NanoOnlyRunner, NeedsHeavy } from "../engine.js";
import { WorkerEngine } from "../pool/worker-engine.js";
import { spawnPythonWorker } from "./runtime.js";

export interface PythonEngineConfig {
  seed: number;
  clock: "virtual" | "real";
  env: Record<string, string>;
  limits: Limits;
  mounts: Mount[];
  /** urllib / http.client through the host, limited to these hosts; absent: no network. */
  network?: NetworkGrant | undefined;
  /** `network.secrets` with the placeholders `env` holds; absent: none. */
  secrets?: SecretSet | undefined;
}

export class PythonWasmEngine extends WorkerEngine implements NanoOnlyRunner {
  /** Take a ready worker from `pool` when allowed, else start one; then configure it. */
  static async start(config: PythonEngineConfig, pool: WorkerPool | undefined): Promise<PythonWasmEngine> {
    const fromPool = config.mounts.length === 0 ? pool?.take() : undefined;
    const worker = fromPool ?? (await spawnPythonWorker(config.mounts));
    const engine = new PythonWasmEngine(worker, config);
    await engine.configure(
      WorkerEngine.configureMessage({
        seed: config.seed,
        clock: config.clock,
        env: config.env,
        limits: config.limits,
        mounts: config.mounts,
        ...(config.network ? { network: { maxRequestBytes: config.network.maxRequestBytes } } : {}),
      }),
      fromPool !== undefined,
    );
    return engine;
  }

  /** Tier "auto": the worker parses the code and runs it only when the nano tier has what it needs. */
  runUnlessHeavy(code: string, opts: EngineRunOptions): Promise<EngineRunResult | NeedsHeavy> {
    return this.runCell(code, opts, true);
  }
}
