// A small pool of ready workers: each has already restored the interpreter snapshot and waits for
// its configuration. A worker is handed out once and never returns: one worker, one sandbox.
import type { WorkerProcess } from "./worker-process.js";

/** What a pool can hold: a started worker (or heavy-tier sandbox) that says when it is ready. */
export interface Poolable {
  readonly alive: boolean;
  readonly ready: Promise<unknown>;
  unref(): void;
  ref(): void;
  /** Back to normal priority once taken (workers that boot in the background). */
  foreground?(): void;
  kill(reason: Error): void;
  exited$(): Promise<void>;
}

const REFILL_DELAY_MS = 250;
/** After a take found no ready worker (its caller now starts one cold), refills start one at a time for this long. */
const YIELD_MS = 1000;

export interface WorkerPoolHooks<W> {
  /** Every take(), `hit` false when no ready worker was there. Called before the refill is scheduled. */
  onTake?: (hit: boolean) => void;
  /** A started worker just became ready and joined the pool. */
  onReady?: (w: W) => void;
  /** The clock (ms) the yield rule reads; tests pass a fake one. */
  now?: () => number;
}

export class WorkerPool<W extends Poolable = WorkerProcess> {
  private readonly ready: W[] = [];
  private starting = 0;
  private closed = false;
  /** Set when a start failed; cleared by the next take(), so a broken setup does not spin. */
  private failing = false;
  private lastMissAt = -Infinity;
  private readonly now: () => number;
  /** Workers starting at once while refilling (default 1). Start-up is CPU-bound: keep it small. */
  maxStarting = 1;

  constructor(
    private readonly spawnWorker: () => Promise<W>,
    private size: number,
    private readonly hooks: WorkerPoolHooks<W> = {},
  ) {
    this.now = hooks.now ?? Date.now;
  }

  get targetSize(): number {
    return this.size;
  }

  get readyCount(): number {
    return this.ready.length;
  }

  get startingCount(): number {
    return this.starting;
  }

  /** Set the target: ready workers above it are killed now; `fill` (default) starts any missing. */
  resize(size: number, fill = true): void {
    this.size = size;
    while (this.ready.length > size) this.ready.pop()!.kill(new Error("pool shrunk"));
    if (fill) this.fill();
  }

  /** A ready, live worker, or undefined when none is ready yet. Starts a replacement. */
  take(): W | undefined {
    let w: W | undefined;
    while ((w = this.ready.shift()) && !w.alive);
    this.failing = false;
    if (!w) this.lastMissAt = this.now();
    this.hooks.onTake?.(w !== undefined);
    // Refill a moment later: starting a worker takes a core for ~0.3 s, and the sandbox just
    // handed out should not compete with it for its first runs.
    setTimeout(() => this.fill(), REFILL_DELAY_MS).unref();
    if (w) {
      w.ref();
      w.foreground?.();
    }
    return w;
  }

  /**
   * Start workers until `size` are ready or starting: at most `maxStarting` at once, and one at a
   * time while takes are missing (their callers' cold starts need the cores more than the pool).
   */
  fill(): void {
    const limit = this.now() - this.lastMissAt < YIELD_MS ? 1 : Math.max(1, this.maxStarting);
    while (!this.closed && !this.failing && this.starting < limit && this.ready.length + this.starting < this.size) this.startOne();
  }

  private startOne(): void {
    this.starting++;
    void this.spawnWorker()
      .then(async (w) => {
        w.unref();
        await w.ready;
        // `starting` still counts this one: it joins if the ready ones leave it room.
        if (this.closed || this.ready.length >= this.size) w.kill(new Error("pool closed"));
        else {
          this.ready.push(w);
          this.hooks.onReady?.(w);
        }
      })
      .catch(() => {
        this.failing = true; // a worker that failed to start is not pooled; retry on the next take()
      })
      .finally(() => {
        this.starting--;
        this.fill();
      });
  }

  /** Resolves once the pool holds `size` ready workers (or is closed). */
  async warm(timeoutMs = 60_000): Promise<void> {
    this.fill();
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && !this.failing && this.ready.length < this.size && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = this.ready.splice(0);
    for (const w of all) {
      w.ref(); // idle workers are unref'd; waiting for their exit must keep the loop alive
      w.kill(new Error("pool closed"));
    }
    await Promise.all(all.map((w) => w.exited$()));
  }
}
