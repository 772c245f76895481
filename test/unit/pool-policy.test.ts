// The adaptive pool's sizing, driven by timestamps (DemandPolicy), the memory budget's split
// (allocate), and the WorkerPool's refill concurrency with fake workers and a fake clock.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { allocate, DemandPolicy } from "../../src/engines/pool/policy.js";
import { WorkerPool, type Poolable } from "../../src/engines/pool/pool.js";
import { InvalidOptionsError, Sandbox } from "../../src/index.js";
import { parseOptions, poolOptionsSchema, resolvePoolOptions } from "../../src/policy/options.js";
import { poolOptions } from "../../src/server/index.js";

const sizing = { min: 2, max: 8, windowMs: 5000, idleShrinkMs: 30_000 };

describe("DemandPolicy", () => {
  it("keeps min with no takes and a fixed size whatever the takes", () => {
    const p = new DemandPolicy(sizing);
    assert.equal(p.target(0), 2);
    assert.equal(p.nextChange(0), undefined);
    const fixed = new DemandPolicy({ ...sizing, min: 3, max: 3 });
    for (let t = 0; t < 10_000; t += 100) fixed.recordTake(t);
    assert.equal(fixed.target(10_000), 3);
    assert.equal(fixed.nextChange(10_000), undefined);
  });

  it("grows to the largest burst within the window, capped by max", () => {
    const p = new DemandPolicy(sizing);
    for (let i = 0; i < 5; i++) p.recordTake(1000 + i * 400); // 5 takes in 1.6 s
    assert.equal(p.target(3000), 5);
    for (let i = 0; i < 20; i++) p.recordTake(4000 + i * 100);
    assert.equal(p.target(6000), 8);
  });

  it("takes spread wider than the window do not add up", () => {
    const p = new DemandPolicy(sizing);
    for (let i = 0; i < 6; i++) p.recordTake(i * 6000); // one per 6 s
    assert.equal(p.target(30_001), 2);
  });

  it("each take counts for idleShrinkMs: a burst ages out take by take, to min idleShrinkMs after the last", () => {
    const p = new DemandPolicy(sizing);
    for (let i = 0; i < 6; i++) p.recordTake(1000 + i * 400);
    const last = 1000 + 5 * 400;
    assert.equal(p.target(30_999), 6);
    assert.equal(p.nextChange(30_999), 1000 + 30_000); // the oldest take ages out first
    assert.equal(p.target(31_000), 5);
    assert.equal(p.target(last + 30_000 - 1), 2); // one take left: min
    assert.equal(p.nextChange(last + 30_000 - 1), last + 30_000);
    assert.equal(p.nextChange(last + 30_000), undefined);
  });

  it("a trickle after a burst lets the burst age out", () => {
    const p = new DemandPolicy(sizing);
    for (let i = 0; i < 6; i++) p.recordTake(i * 100);
    for (let t = 10_000; t <= 60_000; t += 10_000) p.recordTake(t);
    assert.equal(p.target(60_000), 2);
  });
});

describe("allocate (memory budget)", () => {
  it("grants what is wanted when it fits, and nothing past the budget", () => {
    assert.deepEqual(allocate([{ want: 4, min: 2, mbEach: 200 }, { want: 3, min: 2, mbEach: 100 }], Infinity), [4, 3]);
    const g = allocate([{ want: 8, min: 2, mbEach: 200 }, { want: 8, min: 2, mbEach: 100 }], 1024);
    assert.ok(g[0]! * 200 + g[1]! * 100 <= 1024, String(g));
    assert.ok(g[0]! >= 2 && g[1]! >= 2);
    assert.deepEqual(g, [3, 4]); // 600 MB min, then the pool furthest below its want, one at a time
  });

  it("the budget wins over min", () => {
    assert.deepEqual(allocate([{ want: 2, min: 2, mbEach: 200 }, { want: 2, min: 2, mbEach: 100 }], 250), [1, 0]);
    assert.deepEqual(allocate([{ want: 0, min: 0, mbEach: 200 }], 1000), [0]);
  });
});

class FakeWorker implements Poolable {
  alive = true;
  readonly ready: Promise<void>;
  resolve!: () => void;
  constructor() {
    this.ready = new Promise((r) => (this.resolve = r));
  }
  unref(): void {}
  ref(): void {}
  kill(): void {
    this.alive = false;
  }
  exited$(): Promise<void> {
    return Promise.resolve();
  }
}

const tick = () => new Promise((r) => setImmediate(r));

describe("WorkerPool refills", () => {
  it("starts at most maxStarting at once, and one at a time for a while after a take missed", async () => {
    let now = 0;
    const started: FakeWorker[] = [];
    const takes: boolean[] = [];
    const pool = new WorkerPool<FakeWorker>(
      () => {
        const w = new FakeWorker();
        started.push(w);
        return Promise.resolve(w);
      },
      6,
      { now: () => now, onTake: (hit) => takes.push(hit) },
    );
    pool.maxStarting = 2;
    pool.fill();
    assert.equal(pool.startingCount, 2);
    started[0]!.resolve();
    await tick();
    await tick();
    assert.equal(pool.readyCount, 1);
    assert.equal(pool.startingCount, 2); // the finished one's slot refilled at once
    assert.equal(started.length, 3);
    // A take that finds a ready worker: no yield; one that misses: one start at a time for 1 s.
    assert.ok(pool.take());
    assert.equal(pool.take(), undefined);
    assert.deepEqual(takes, [true, false]);
    for (const w of started) w.resolve();
    await tick();
    await tick();
    await tick();
    assert.equal(pool.startingCount, 1);
    now = 1000;
    pool.fill();
    assert.equal(pool.startingCount, 2);
    // Shrinking kills surplus ready workers; ready + starting never passes the target.
    pool.resize(1);
    for (const w of started) w.resolve();
    for (let i = 0; i < 5; i++) await tick();
    assert.ok(pool.readyCount + pool.startingCount <= 1, `${pool.readyCount} + ${pool.startingCount}`);
    await pool.close();
  });
});

describe("configurePool options", () => {
  const resolve = (o: object) => resolvePoolOptions(parseOptions(poolOptionsSchema, o), 1);

  it("size is fixed (as before); min/max are adaptive with defaults", () => {
    assert.deepEqual(resolve({}), { min: 2, max: 2, heavy: 1, memoryBudgetMb: Infinity, idleShrinkMs: 30_000, windowMs: 5000 });
    assert.equal(resolve({ size: 0 }).heavy, 0);
    assert.deepEqual(resolve({ max: 6 }), { min: 2, max: 6, heavy: 1, memoryBudgetMb: Infinity, idleShrinkMs: 30_000, windowMs: 5000 });
    assert.deepEqual(resolve({ min: 1, memoryBudgetMb: 512, idleShrinkMs: 1000 }), { min: 1, max: 8, heavy: 1, memoryBudgetMb: 512, idleShrinkMs: 1000, windowMs: 5000 });
  });

  it("refuses size with min/max, and min above max", async () => {
    await assert.rejects(Sandbox.configurePool({ size: 2, max: 4 }), (e: unknown) => e instanceof InvalidOptionsError && /size/.test(e.message));
    await assert.rejects(Sandbox.configurePool({ min: 5, max: 4 }), (e: unknown) => e instanceof InvalidOptionsError && /min/.test(e.message));
  });

  it("the server is adaptive by default, fixed with poolSize", () => {
    assert.deepEqual(poolOptions({}), { min: 2, max: 8, memoryBudgetMb: 1024, idleShrinkMs: 30_000 });
    assert.deepEqual(poolOptions({ poolSize: 3 }), { size: 3 });
    assert.throws(() => poolOptions({ poolSize: 3, poolMax: 4 }), /give one/);
  });
});
