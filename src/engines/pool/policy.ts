// How many ready workers a pool should hold: pure functions of timestamps (no timers, no
// processes), so the sizing can be tested with a fake clock. pools.ts feeds them and applies the
// answer to each WorkerPool.

/** Sizing of one pool. `min === max` is a fixed size (configurePool({ size })). */
export interface SizingOptions {
  /** Ready workers kept even when idle. */
  min: number;
  /** Most ready workers demand may ask for. */
  max: number;
  /** Demand is the most takes seen in any `windowMs` span... */
  windowMs: number;
  /** ...over the last `idleShrinkMs`: after that long without takes the target is back to `min`. */
  idleShrinkMs: number;
}

/** Takes remembered at most (a burst larger than this is sized as this many; max is far below). */
const MAX_REMEMBERED = 1024;

/**
 * Demand of one pool. The target is the most takes seen within any `windowMs` span of the last
 * `idleShrinkMs` (clamped to [min, max]): a repeat of the recent burst is then served from ready
 * workers even if no refill finishes during it. Each take counts for `idleShrinkMs`: a burst
 * ages out take by take, and `idleShrinkMs` after the last take the target is back to `min`.
 */
export class DemandPolicy {
  private readonly takes: number[] = [];

  constructor(public options: SizingOptions) {}

  get adaptive(): boolean {
    return this.options.max > this.options.min;
  }

  /** A take at `now` (ms, non-decreasing). Hits and misses alike: both are demand. */
  recordTake(now: number): void {
    if (!this.adaptive) return;
    this.takes.push(now);
    if (this.takes.length > MAX_REMEMBERED) this.takes.shift();
  }

  /** Ready workers wanted at `now`. */
  target(now: number): number {
    const { min, max, windowMs } = this.options;
    if (!this.adaptive) return min;
    this.forget(now);
    // Most takes in any window: two pointers over the sorted timestamps.
    let peak = 0;
    for (let lo = 0, hi = 0; hi < this.takes.length; hi++) {
      while ((this.takes[hi] as number) - (this.takes[lo] as number) >= windowMs) lo++;
      peak = Math.max(peak, hi - lo + 1);
    }
    return Math.min(max, Math.max(min, peak));
  }

  /** When the target may next change without new takes (the oldest take ages out), or undefined. */
  nextChange(now: number): number | undefined {
    if (!this.adaptive) return undefined;
    this.forget(now);
    const oldest = this.takes[0];
    return oldest === undefined ? undefined : oldest + this.options.idleShrinkMs;
  }

  private forget(now: number): void {
    const horizon = now - this.options.idleShrinkMs;
    let n = 0;
    while (n < this.takes.length && (this.takes[n] as number) <= horizon) n++;
    if (n > 0) this.takes.splice(0, n);
  }
}

/** One pool as the memory budget sees it. */
export interface BudgetClaim {
  /** Ready workers the pool's policy wants. */
  want: number;
  /** Ready workers it keeps before any pool grows past its own minimum (granted first). */
  min: number;
  /** Estimated memory of one of its ready workers, MB. */
  mbEach: number;
}

/**
 * Ready workers granted to each pool so that together they fit `budgetMb`: every pool's `min`
 * first (in order, as far as the budget goes — the budget wins over `min`), then one worker at a
 * time to the pool furthest below what it wants, until wants are met or nothing more fits.
 */
export function allocate(claims: readonly BudgetClaim[], budgetMb: number): number[] {
  const granted = claims.map(() => 0);
  let left = budgetMb;
  claims.forEach((c, i) => {
    const n = Math.min(Math.min(c.min, c.want), c.mbEach > 0 ? Math.floor(left / c.mbEach) : c.want);
    granted[i] = n;
    left -= n * c.mbEach;
  });
  for (;;) {
    let best = -1;
    for (let i = 0; i < claims.length; i++) {
      const c = claims[i] as BudgetClaim;
      const short = c.want - (granted[i] as number);
      if (short <= 0 || c.mbEach > left) continue;
      if (best < 0 || short > (claims[best] as BudgetClaim).want - (granted[best] as number)) best = i;
    }
    if (best < 0) return granted;
    granted[best] = (granted[best] as number) + 1;
    left -= (claims[best] as BudgetClaim).mbEach;
  }
}
