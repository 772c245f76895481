// Adaptive pools with real workers: a burst of creates grows the JavaScript pool's target (and
// its ready workers follow), an idle period shrinks it back to min, and the memory budget caps it.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
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

/** The niceness of every thread of process `pid` (field 19 of /proc/PID/task/TID/stat). */
function threadNices(pid: number): number[] {
  return fs.readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
  });
}

/** This process's live node child processes (the workers: `nice` and `unshare` exec in place). */
function workers(): number[] {
  const rows = execFileSync("ps", ["--ppid", String(process.pid), "-o", "pid=,stat=,comm="], { encoding: "utf8" }).split("\n");
  return rows.map((l) => l.trim().split(/\s+/)).filter(([, stat, comm]) => comm === "node" && !stat?.startsWith("Z")).map(([pid]) => Number(pid));
}

describe("adaptive pool", () => {
  after(() => Sandbox.configurePool({ size: 0 }));

  it("pool workers boot in the background (nice 10, every thread); a taken one runs at normal priority", { skip: process.platform !== "linux" && "needs /proc" }, async () => {
    await Sandbox.configurePool({ size: 1 });
    await burst(1); // the JavaScript pool exists from its first take, and refills
    await until("a ready JavaScript worker", () => poolStats().javascript?.ready === 1);
    const pooled = workers();
    assert.ok(pooled.length >= 1);
    for (const pid of pooled) assert.deepEqual([...new Set(threadNices(pid))], [10], `pool worker ${pid}: every thread niced`);
    const sb = await Sandbox.create({ language: "javascript" });
    try {
      const pid = (sb as unknown as { engine: { pid: number } }).engine.pid;
      assert.ok(pooled.includes(pid), "the sandbox got a pooled worker");
      if (process.getuid?.() === 0) assert.deepEqual([...new Set(threadNices(pid))], [0], "taken: every thread back at nice 0");
      else console.log("# not root: a taken worker stays niced (raising priority needs CAP_SYS_NICE); not checked");
      assert.equal((await sb.runCode("1 + 1")).value, "2");
    } finally {
      await sb.kill();
    }
  });

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
