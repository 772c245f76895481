// Pools of ready workers, one per engine kind ("python", "javascript", ...), all sized by
// Sandbox.configurePool(). An engine asks for its pool by kind and says how to start a worker.
// Heavy-tier pools (one per image and limits) have their own size: a ready heavy sandbox holds
// ~60–100 MB, a nano worker far less. The tier comes from the engine asking (its registry entry).
import type { Poolable, WorkerPool } from "./pool/pool.js";
import { WorkerPool as Pool } from "./pool/pool.js";

const pools = new Map<string, { pool: WorkerPool<Poolable>; tier: "nano" | "heavy" }>();
let size = 2;
/** Ready sandboxes per heavy-tier pool unless configurePool({ heavy }) says otherwise. */
export const DEFAULT_HEAVY_POOL_SIZE = 1;
let heavySize = DEFAULT_HEAVY_POOL_SIZE;

const sizeOf = (tier: "nano" | "heavy") => (tier === "heavy" ? heavySize : size);

/** The shared pool for `kind` (of an engine of `tier`), created on first use; undefined while pooling is off (size 0). */
export function poolFor<W extends Poolable>(kind: string, spawn: () => Promise<W>, tier: "nano" | "heavy"): WorkerPool<W> | undefined {
  if (sizeOf(tier) === 0) return undefined;
  const found = pools.get(kind);
  if (found) return found.pool as unknown as WorkerPool<W>;
  const p = new Pool<W>(spawn, sizeOf(tier));
  pools.set(kind, { pool: p as unknown as WorkerPool<Poolable>, tier });
  return p;
}

/** Resize the nano pools to `newSize` and the heavy ones to `newHeavySize` (0 closes them). */
export async function resizePools(newSize: number, newHeavySize = Math.min(newSize, DEFAULT_HEAVY_POOL_SIZE)): Promise<void> {
  size = newSize;
  heavySize = newHeavySize;
  const closing: Promise<void>[] = [];
  for (const [kind, { pool, tier }] of [...pools]) {
    if (sizeOf(tier) > 0) pool.resize(sizeOf(tier));
    else {
      pools.delete(kind);
      closing.push(pool.close());
    }
  }
  await Promise.all(closing);
}

/** Target size of each pool that exists, by kind (for tests and diagnostics). */
export function poolSizes(): Record<string, number> {
  return Object.fromEntries([...pools].map(([kind, p]) => [kind, p.pool.targetSize]));
}

/** Resolves once every pool that exists is full. */
export async function warmPools(): Promise<void> {
  await Promise.all([...pools.values()].map((p) => p.pool.warm()));
}

export async function closePools(): Promise<void> {
  const all = [...pools.values()];
  pools.clear();
  await Promise.all(all.map((p) => p.pool.close()));
}
