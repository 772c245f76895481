// Adaptive pools with real workers: a burst of creates grows the JavaScript pool's target (and
// its ready workers follow), an idle period shrinks it back to min, and the memory budget caps it.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { poolSizes, poolStats } from "../../src/engines/pools.js";
import { Sandbox } from "../../src/index.js";

async function until(what: string, ok: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(poolStats())}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `n` JavaScript sandboxes created at once (n takes from the pool, within milliseconds); each runs once and is killed. */
async function burst(n: number, afterCreates: () => void = () => undefined): Promise<void> {
  const sbs = await Promise.all(Array.from({ length: n }, () => Sandbox.create({ language: "javascript" })));
  afterCreates();
  try {
    for (const sb of sbs) assert.equal((await sb.runCode("1")).value, "1");
  } finally {
    await Promise.all(sbs.map((sb) => sb.kill()));
  }
}

describe("adaptive pool", () => {
  after(() => Sandbox.configurePool({ size: 0 }));

  it("a burst grows the target to max, the pool fills to it, and idleness shrinks it back to min", async () => {
    // idleShrinkMs leaves the pool time to fill (two starts at once) before the burst ages out.
    await Sandbox.configurePool({ min: 1, max: 3, idleShrinkMs: 20_000 });
    let grown: number | undefined;
    await burst(4, () => (grown = poolSizes().javascript));
    assert.equal(grown, 3);
    let mostReady = 0;
    await until("the target back at min", () => {
      mostReady = Math.max(mostReady, poolStats().javascript!.ready);
      return poolSizes().javascript === 1;
    });
    assert.equal(mostReady, 3);
    assert.ok(poolStats().javascript!.ready <= 1);
    const stats = poolStats().javascript!;
    assert.ok(stats.measured && stats.mbEach > 10 && stats.mbEach < 1000, `measured RSS ${stats.mbEach} MB`);
  });

  it("the memory budget caps every pool together", async () => {
    const s = poolStats();
    const py = s.python?.mbEach ?? 0;
    const js = s.javascript!.mbEach;
    const budget = py * (s.python?.target ?? 0) + js + Math.floor(js / 2); // room for one JavaScript worker
    await Sandbox.configurePool({ min: 1, max: 3, idleShrinkMs: 60_000, memoryBudgetMb: budget });
    await burst(4);
    const after = poolStats(); // the takes are 60 s from ageing out
    assert.equal(after.javascript!.want, 3);
    assert.equal(after.javascript!.target, 1);
    const held = Object.values(after).reduce((n, p) => n + p.target * p.mbEach, 0);
    assert.ok(held <= budget, `${held} MB > ${budget} MB`);
    // Raising the budget lets the wanted size through at once.
    await Sandbox.configurePool({ min: 1, max: 3, idleShrinkMs: 60_000, memoryBudgetMb: budget + 2 * js });
    assert.equal(poolSizes().javascript, 3);
  });
});
