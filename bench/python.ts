// Python nano tier: agentbox's start-up and round-trip costs next to the cold Pyodide baseline.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Sandbox } from "../src/index.js";
import { rssMb, stats, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

/** The baseline script: a fresh Node process that loads Pyodide cold and prints 1. */
export const BASELINE_SCRIPT = fileURLToPath(new URL("./baseline-pyodide.mjs", import.meta.url));

/** One baseline process, spawn → "1" on its stdout, ms. */
export async function baselineOnce(): Promise<number> {
  const script = BASELINE_SCRIPT;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    c.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("1\n")) resolve(performance.now() - t0);
    });
    c.on("exit", (code) => reject(new Error(`baseline exited (${code}) without printing 1: ${JSON.stringify(out)}`)));
  });
}

async function run({ quick, progress }: SectionContext): Promise<SectionResult> {
  const N = { baseline: quick ? 2 : 5, cold: quick ? 3 : 10, pooled: quick ? 5 : 20, roundTrip: quick ? 200 : 2000 };
  const rows: Row[] = [];
  progress("python: preparing the snapshot");
  // Make sure the snapshot exists before timing anything.
  await Sandbox.configurePool({ size: 0 });
  await (await Sandbox.create({ pool: false })).kill();

  progress(`python: baseline x${N.baseline}`);
  const base: number[] = [];
  for (let i = 0; i < N.baseline; i++) base.push(await baselineOnce());
  rows.push(stats("baseline: cold loadPyodide() + print(1), fresh process", "ms", base));

  progress(`python: cold create x${N.cold}`);
  const cold: number[] = [];
  for (let i = 0; i < N.cold; i++) {
    const t0 = performance.now();
    const sb = await Sandbox.create({ pool: false });
    await sb.runCode("print(1)");
    cold.push(performance.now() - t0);
    await sb.kill();
  }
  rows.push(stats("agentbox cold (pool 0): create → first print(1) result", "ms", cold));

  progress(`python: pooled create x${N.pooled}`);
  await Sandbox.configurePool({ size: 2, wait: true });
  const pooled: number[] = [];
  for (let i = 0; i < N.pooled; i++) {
    await Sandbox.configurePool({ size: 2, wait: true });
    const t0 = performance.now();
    const sb = await Sandbox.create();
    await sb.runCode("print(1)");
    pooled.push(performance.now() - t0);
    await sb.kill();
  }
  rows.push(stats("agentbox pooled: create → first print(1) result", "ms", pooled));
  // The same on tier "auto": a pooled nano worker, the cell checked by the guest before it runs.
  const autoPooled: number[] = [];
  for (let i = 0; i < N.pooled; i++) {
    await Sandbox.configurePool({ size: 2, wait: true });
    const t0 = performance.now();
    const sb = await Sandbox.create({ tier: "auto", image: "base" });
    const r = await sb.runCode("print(1)");
    autoPooled.push(performance.now() - t0);
    if (r.tier !== "nano") throw new Error(`print(1) ran on ${r.tier}`);
    await sb.kill();
  }
  rows.push(stats('tier "auto" pooled: create → first print(1) result (stays nano)', "ms", autoPooled));
  await Sandbox.configurePool({ size: 0 });

  const sb = await Sandbox.create({ pool: false });
  for (let i = 0; i < 200; i++) await sb.runCode("1"); // warm the JIT on both sides
  const rt: number[] = [];
  const tAll = performance.now();
  for (let i = 0; i < N.roundTrip; i++) {
    const t0 = performance.now();
    await sb.runCode("x = 1");
    rt.push(performance.now() - t0);
  }
  const runsPerSec = N.roundTrip / ((performance.now() - tAll) / 1000);
  rows.push(stats("runCode round trip on a live sandbox (`x = 1`)", "ms", rt));
  await new Promise((r) => setTimeout(r, 500));
  const idleRss = rssMb(sb.pid);
  await sb.kill();

  // Tier "auto" on a stdlib cell: the guest's heavy-tier check rides on the run's own round trip.
  // Measured interleaved with a nano sandbox running the same cell, so both see the same machine.
  progress(`python: tier auto vs nano, stdlib cell x${N.roundTrip}`);
  const cell = "import json, re, os.path\nx = json.dumps({'a': re.sub('a', 'b', 'abc')})";
  const nanoSb = await Sandbox.create({ pool: false });
  const autoSb = await Sandbox.create({ tier: "auto", pool: false });
  for (let i = 0; i < 200; i++) {
    await nanoSb.runCode(cell);
    await autoSb.runCode(cell);
  }
  const nanoRt: number[] = [];
  const autoRt: number[] = [];
  for (let i = 0; i < N.roundTrip; i++) {
    for (const [box, into] of i % 2 ? ([[nanoSb, nanoRt], [autoSb, autoRt]] as const) : ([[autoSb, autoRt], [nanoSb, nanoRt]] as const)) {
      const t0 = performance.now();
      const r = await box.runCode(cell);
      into.push(performance.now() - t0);
      if (r.tier !== "nano" || r.error) throw new Error(`the stdlib cell ran on ${r.tier}: ${JSON.stringify(r.error)}`);
    }
  }
  rows.push(stats("runCode round trip, stdlib cell, tier nano", "ms", nanoRt));
  rows.push(stats('runCode round trip, stdlib cell, tier "auto" (stays nano)', "ms", autoRt));
  await Promise.all([nanoSb.kill(), autoSb.kill()]);

  const med = (name: string) => rows.find((r) => r.name.startsWith(name))!.median;
  const summary = {
    runsPerSecond: Math.round(runsPerSec),
    idleWorkerRssMb: Math.round(idleRss),
    coldSpeedupVsBaseline: +(med("baseline") / med("agentbox cold")).toFixed(1),
    targets: {
      pooledCreateP50LE5ms: med("agentbox pooled") <= 5,
      coldAtLeast5xFaster: med("baseline") / med("agentbox cold") >= 5,
      roundTripP50LE1ms: med("runCode round trip") <= 1,
      autoWithin1msOfNano: med("runCode round trip, stdlib cell, tier \"auto\"") - med("runCode round trip, stdlib cell, tier nano") <= 1,
      autoPooledWithin1msOfNanoPooled: med('tier "auto" pooled') - med("agentbox pooled") <= 1,
    },
  };
  const notes = [
    `runs per second, one sandbox, sequential: ${summary.runsPerSecond}`,
    `RSS of one idle sandbox's worker: ${summary.idleWorkerRssMb} MB`,
    `cold create is ${summary.coldSpeedupVsBaseline}x faster than the baseline`,
    `targets: ${JSON.stringify(summary.targets)}`,
  ];
  return { rows, notes, summary };
}

export const python: Section = { name: "python", run };
