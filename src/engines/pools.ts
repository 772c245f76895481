// Pools of ready workers, one per engine kind ("python", "javascript", ...), all sized by
// Sandbox.configurePool(). An engine asks for its pool by kind and says how to start a worker.
// Heavy-tier pools (one per image and limits) have their own, fixed size: a ready heavy sandbox
// holds ~60–100 MB. The tier comes from the engine asking (its registry entry).
//
// Nano pools are fixed (`size`: min === max) or adaptive (between `min` and `max`, by the takes
// each pool sees: engines/pool/policy.ts). Whichever, the targets of all pools together are kept
// within the memory budget: each kind's ready worker is estimated by the RSS of its ready workers
// (read from /proc once each is ready; a conservative constant until then, and for heavy ones).
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { DEFAULT_POOL_IDLE_SHRINK_MS, POOL_DEMAND_WINDOW_MS, type PoolConfig } from "../policy/options.js";
import { allocate, DemandPolicy } from "./pool/policy.js";
import type { Poolable, WorkerPool } from "./pool/pool.js";
import { WorkerPool as Pool } from "./pool/pool.js";

/** Ready sandboxes per heavy-tier pool unless configurePool({ heavy }) says otherwise. */
export const DEFAULT_HEAVY_POOL_SIZE = 1;

/**
 * Memory of one ready worker (MB) until one of its kind has been measured. Measured on 2 cores
 * (RSS, which counts shared pages in full, so it over-estimates what each adds): an idle Python
 * worker ~200 MB, a JavaScript one ~91 MB. A heavy sandbox's memory is spread over several
 * processes (runsc, its sandbox, the guest) and is never measured here: ~60–100 MB, taken as 100.
 */
const MB_BEFORE_MEASURED: Record<string, number> = { python: 200, javascript: 100 };
const MB_NANO_OTHER = 200;
const MB_HEAVY = 100;

/**
 * Refills starting at once per adaptive pool (a fixed one refills one at a time, as it always
 * has): 2, but 1 on a host of 2 cores or fewer, where two warm-ups would take every core from the
 * sandboxes in use (measured on 2 cores: with 2, the burst that grew the pool ran slower).
 */
const ADAPTIVE_MAX_STARTING = Math.min(2, Math.max(1, availableParallelism() - 1));

interface Entry {
  kind: string;
  pool: WorkerPool<Poolable>;
  tier: "nano" | "heavy";
  policy: DemandPolicy;
  mbEach: number;
  measured: boolean;
}

const pools = new Map<string, Entry>();
let config: PoolConfig = { min: 2, max: 2, heavy: DEFAULT_HEAVY_POOL_SIZE, memoryBudgetMb: Infinity, idleShrinkMs: DEFAULT_POOL_IDLE_SHRINK_MS, windowMs: POOL_DEMAND_WINDOW_MS };
let timer: NodeJS.Timeout | undefined;

const enabled = (tier: "nano" | "heavy") => (tier === "heavy" ? config.heavy : config.max) > 0;

function sizingFor(tier: "nano" | "heavy") {
  const { min, max, heavy, windowMs, idleShrinkMs } = config;
  return tier === "heavy" ? { min: heavy, max: heavy, windowMs, idleShrinkMs } : { min, max, windowMs, idleShrinkMs };
}

/** The shared pool for `kind` (of an engine of `tier`), created on first use; undefined while pooling is off (size 0). */
export function poolFor<W extends Poolable>(kind: string, spawn: () => Promise<W>, tier: "nano" | "heavy"): WorkerPool<W> | undefined {
  if (!enabled(tier)) return undefined;
  const found = pools.get(kind);
  if (found) return found.pool as unknown as WorkerPool<W>;
  const policy = new DemandPolicy(sizingFor(tier));
  const entry: Entry = { kind, pool: undefined as unknown as WorkerPool<Poolable>, tier, policy, mbEach: tier === "heavy" ? MB_HEAVY : (MB_BEFORE_MEASURED[kind] ?? MB_NANO_OTHER), measured: false };
  const p = new Pool<W>(spawn, 0, {
    onTake: () => {
      entry.policy.recordTake(Date.now());
      rebalance(entry); // the taking pool refills after the take's own delay
    },
    onReady: (w) => {
      if (tier === "nano") measure(entry, w);
    },
  });
  p.maxStarting = policy.adaptive ? ADAPTIVE_MAX_STARTING : 1;
  entry.pool = p as unknown as WorkerPool<Poolable>;
  pools.set(kind, entry);
  rebalance(entry); // a new pool fills when asked (prewarm) or after its first take, as before
  return p;
}

/** The resident memory of a ready nano worker; a larger one than estimated shrinks the budget's grants now. */
function measure(entry: Entry, w: Poolable): void {
  const pid = (w as { pid?: unknown }).pid;
  if (typeof pid !== "number" || process.platform !== "linux") return;
  let kb: number;
  try {
    kb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
  } catch {
    return;
  }
  if (!Number.isFinite(kb) || kb <= 0) return;
  const mb = Math.ceil(kb / 1024);
  const before = entry.mbEach;
  // The first measurement replaces the constant; later ones can only raise it (a budget is a ceiling).
  entry.mbEach = entry.measured ? Math.max(entry.mbEach, mb) : mb;
  entry.measured = true;
  if (entry.mbEach > before && Number.isFinite(config.memoryBudgetMb)) rebalance();
}

/**
 * Set every pool's target: what its policy wants now, cut to fit the memory budget. A pool whose
 * target fell kills its surplus ready workers at once; one whose target rose starts filling (but
 * `quiet`, the pool that was just taken from or created, fills later, on its own schedule).
 */
function rebalance(quiet?: Entry): void {
  const now = Date.now();
  const entries = [...pools.values()];
  const granted = allocate(
    entries.map((e) => ({ want: e.policy.target(now), min: e.policy.options.min, mbEach: e.mbEach })),
    config.memoryBudgetMb,
  );
  entries.forEach((e, i) => {
    const n = granted[i] as number;
    if (e.pool.targetSize !== n) e.pool.resize(n, e !== quiet);
  });
  if (timer) clearTimeout(timer);
  timer = undefined;
  const next = Math.min(...entries.map((e) => e.policy.nextChange(now) ?? Infinity));
  if (Number.isFinite(next)) {
    timer = setTimeout(() => rebalance(), Math.max(0, next - now) + 1);
    timer.unref();
  }
}

/** Apply configurePool(): resize (or close) each pool under the new sizing; pools made later follow it too. */
export async function configurePools(next: PoolConfig): Promise<void> {
  config = next;
  const closing: Promise<void>[] = [];
  for (const [kind, e] of [...pools]) {
    if (enabled(e.tier)) {
      e.policy.options = sizingFor(e.tier);
      e.pool.maxStarting = e.policy.adaptive ? ADAPTIVE_MAX_STARTING : 1;
    }
    else {
      pools.delete(kind);
      closing.push(e.pool.close());
    }
  }
  rebalance();
  await Promise.all(closing);
}

/** Target size of each pool that exists, by kind (for tests and diagnostics). */
export function poolSizes(): Record<string, number> {
  return Object.fromEntries([...pools].map(([kind, p]) => [kind, p.pool.targetSize]));
}

/** What each pool that exists holds and wants, by kind (for tests and diagnostics). */
export interface PoolStats {
  /** Ready workers the pool keeps now (its policy's want, cut to the memory budget). */
  target: number;
  /** What its policy wants before the budget. */
  want: number;
  ready: number;
  starting: number;
  /** Estimated memory of one ready worker, MB, and whether it was measured (else a constant). */
  mbEach: number;
  measured: boolean;
}

export function poolStats(): Record<string, PoolStats> {
  const now = Date.now();
  return Object.fromEntries(
    [...pools].map(([kind, e]) => [kind, { target: e.pool.targetSize, want: e.policy.target(now), ready: e.pool.readyCount, starting: e.pool.startingCount, mbEach: e.mbEach, measured: e.measured }]),
  );
}

/** Resolves once every pool that exists is full. */
export async function warmPools(): Promise<void> {
  await Promise.all([...pools.values()].map((p) => p.pool.warm()));
}

export async function closePools(): Promise<void> {
  const all = [...pools.values()];
  pools.clear();
  if (timer) clearTimeout(timer);
  timer = undefined;
  await Promise.all(all.map((p) => p.pool.close()));
}
