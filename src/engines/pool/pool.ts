// A small pool of ready workers: each has already restored the interpreter snapshot and waits for
// its configuration. A worker is handed out once and never returns: one worker, one sandbox.
import type { WorkerProcess } from "./worker-process.js";

/** What a pool can hold: a started worker (or heavy-tier sandbox) that says when it is ready. */
export interface Poolable {
  readonly alive: boolean;
  readonly ready: Promise<unknown>;
  unref(): void;
  ref(): void;
  kill(reason: Error): void;
  exited$(): Promise<void>;
}

const REFILL_DELAY_MS = 250;

export class WorkerPool<W extends Poolable = WorkerProcess> {
  private readonly ready: W[] = [];
  private starting = 0;
  private closed = false;
  /** Set when a start failed; cleared by the next take(), so a broken setup does not spin. */
  private failing = false;

  constructor(
    private readonly spawnWorker: () => Promise<W>,
    private size: number,
  ) {}

  get targetSize(): number {
    return this.size;
  }

  get readyCount(): number {
    return this.ready.length;
  }

  resize(size: number): void {
    this.size = size;
    while (this.ready.length > size) this.ready.pop()!.kill(new Error("pool shrunk"));
    this.fill();
  }

  /** A ready, live worker, or undefined when none is ready yet. Starts a replacement. */
  take(): W | undefined {
    let w: W | undefined;
    while ((w = this.ready.shift()) && !w.alive);
    this.failing = false;
    // Refill a moment later: starting a worker takes a core for ~0.3 s, and the sandbox just
    // handed out should not compete with it for its first runs.
    setTimeout(() => this.fill(), REFILL_DELAY_MS).unref();
    if (w) w.ref();
    return w;
  }

  /** Start workers until `size` are ready or starting. One at a time: start-up is CPU-bound. */
  fill(): void {
    if (this.closed || this.failing || this.starting > 0 || this.ready.length >= this.size) return;
    this.starting++;
    void this.spawnWorker()
      .then(async (w) => {
        w.unref();
        await w.ready;
        if (this.closed || this.ready.length >= this.size) w.kill(new Error("pool closed"));
        else this.ready.push(w);
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
