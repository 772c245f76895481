// Pools of ready workers, one per engine kind ("python", "javascript", ...), all sized by
// Sandbox.configurePool(). An engine asks for its pool by kind and says how to start a worker.
import type { Poolable, WorkerPool } from "./pool/pool.js";
import { WorkerPool as Pool } from "./pool/pool.js";

const pools = new Map<string, WorkerPool<Poolable>>();
let size = 2;

/** The shared pool for `kind`, created on first use; undefined while pooling is off (size 0). */
export function poolFor<W extends Poolable>(kind: string, spawn: () => Promise<W>): WorkerPool<W> | undefined {
  if (size === 0) return undefined;
  let p = pools.get(kind) as WorkerPool<W> | undefined;
  if (!p) {
    p = new Pool<W>(spawn, size);
    pools.set(kind, p as unknown as WorkerPool<Poolable>);
  }
  return p;
}

/** Resize every pool (0 closes them). */
export async function resizePools(newSize: number): Promise<void> {
  size = newSize;
  if (size === 0) return closePools();
  for (const p of pools.values()) p.resize(size);
}

/** Resolves once every pool that exists is full. */
export async function warmPools(): Promise<void> {
  await Promise.all([...pools.values()].map((p) => p.warm()));
}

export async function closePools(): Promise<void> {
  const all = [...pools.values()];
  pools.clear();
  await Promise.all(all.map((p) => p.close()));
}
