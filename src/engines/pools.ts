// Pools of ready workers, one per engine kind ("python", "javascript", ...), all sized by
// Sandbox.configurePool(). An engine asks for its pool by kind and says how to start a worker.
// Heavy-tier kinds ("gvisor:…", "microvm:…": one per image and limits) have their own size: a
// ready heavy sandbox holds ~60–100 MB, a nano worker far less.
import type { Poolable, WorkerPool } from "./pool/pool.js";
import { WorkerPool as Pool } from "./pool/pool.js";

const pools = new Map<string, WorkerPool<Poolable>>();
let size = 2;
/** Ready sandboxes per heavy-tier pool unless configurePool({ heavy }) says otherwise. */
export const DEFAULT_HEAVY_POOL_SIZE = 1;
let heavySize = DEFAULT_HEAVY_POOL_SIZE;

const isHeavy = (kind: string) => kind.startsWith("gvisor:") || kind.startsWith("microvm:");
const sizeOf = (kind: string) => (isHeavy(kind) ? heavySize : size);

/** The shared pool for `kind`, created on first use; undefined while pooling is off (size 0). */
export function poolFor<W extends Poolable>(kind: string, spawn: () => Promise<W>): WorkerPool<W> | undefined {
  if (sizeOf(kind) === 0) return undefined;
  let p = pools.get(kind) as WorkerPool<W> | undefined;
  if (!p) {
    p = new Pool<W>(spawn, sizeOf(kind));
    pools.set(kind, p as unknown as WorkerPool<Poolable>);
  }
  return p;
}

/** Resize the nano pools to `newSize` and the heavy ones to `newHeavySize` (0 closes them). */
export async function resizePools(newSize: number, newHeavySize = Math.min(newSize, DEFAULT_HEAVY_POOL_SIZE)): Promise<void> {
  size = newSize;
  heavySize = newHeavySize;
  const closing: Promise<void>[] = [];
  for (const [kind, p] of [...pools]) {
    if (sizeOf(kind) > 0) p.resize(sizeOf(kind));
    else {
      pools.delete(kind);
      closing.push(p.close());
    }
  }
  await Promise.all(closing);
}

/** Target size of each pool that exists, by kind (for tests and diagnostics). */
export function poolSizes(): Record<string, number> {
  return Object.fromEntries([...pools].map(([kind, p]) => [kind, p.targetSize]));
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
