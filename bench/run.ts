// `npm run bench`: agentbox's start-up and round-trip costs next to the cold Pyodide baseline,
// measured in one process run. Prints a table (median, p95) and writes JSON to bench/results/.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { Sandbox } from "../src/index.js";

const quick = process.argv.includes("--quick");
const N = { baseline: quick ? 2 : 5, cold: quick ? 3 : 10, pooled: quick ? 5 : 20, roundTrip: quick ? 200 : 2000 };

interface Row {
  name: string;
  unit: string;
  n: number;
  median: number;
  p95: number;
  min: number;
}

function stats(name: string, unit: string, xs: number[]): Row {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { name, unit, n: s.length, median: at(0.5), p95: at(0.95), min: s[0]! };
}

async function baselineOnce(): Promise<number> {
  const script = fileURLToPath(new URL("./baseline-pyodide.mjs", import.meta.url));
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

function rssMb(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const progress = (s: string) => process.stderr.write(`bench: ${s}\n`);
  progress("preparing the snapshot");
  // Make sure the snapshot exists before timing anything.
  await Sandbox.configurePool({ size: 0 });
  await (await Sandbox.create({ pool: false })).kill();

  progress(`baseline x${N.baseline}`);
  const base: number[] = [];
  for (let i = 0; i < N.baseline; i++) base.push(await baselineOnce());
  rows.push(stats("baseline: cold loadPyodide() + print(1), fresh process", "ms", base));

  progress(`cold create x${N.cold}`);
  const cold: number[] = [];
  for (let i = 0; i < N.cold; i++) {
    const t0 = performance.now();
    const sb = await Sandbox.create({ pool: false });
    await sb.runCode("print(1)");
    cold.push(performance.now() - t0);
    await sb.kill();
  }
  rows.push(stats("agentbox cold (pool 0): create → first print(1) result", "ms", cold));

  progress(`pooled create x${N.pooled}`);
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

  const med = (name: string) => rows.find((r) => r.name.startsWith(name))!.median;
  const summary = {
    runsPerSecond: Math.round(runsPerSec),
    idleWorkerRssMb: Math.round(idleRss),
    coldSpeedupVsBaseline: +(med("baseline") / med("agentbox cold")).toFixed(1),
    targets: {
      pooledCreateP50LE5ms: med("agentbox pooled") <= 5,
      coldAtLeast5xFaster: med("baseline") / med("agentbox cold") >= 5,
      roundTripP50LE1ms: med("runCode round trip") <= 1,
    },
  };

  const w = Math.max(...rows.map((r) => r.name.length));
  console.log(`${"benchmark".padEnd(w)}  ${"n".padStart(5)}  ${"median".padStart(9)}  ${"p95".padStart(9)}  ${"min".padStart(9)}`);
  for (const r of rows) {
    console.log(`${r.name.padEnd(w)}  ${String(r.n).padStart(5)}  ${r.median.toFixed(2).padStart(7)}ms  ${r.p95.toFixed(2).padStart(7)}ms  ${r.min.toFixed(2).padStart(7)}ms`);
  }
  console.log(`runs per second, one sandbox, sequential: ${summary.runsPerSecond}`);
  console.log(`RSS of one idle sandbox's worker: ${summary.idleWorkerRssMb} MB`);
  console.log(`cold create is ${summary.coldSpeedupVsBaseline}x faster than the baseline`);
  console.log(`targets: ${JSON.stringify(summary.targets)}`);

  const result = {
    date: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, memGb: Math.round(os.totalmem() / 2 ** 30), node: process.version },
    quick,
    rows,
    summary,
  };
  const file = fileURLToPath(new URL(`./results/${result.date.replace(/[:.]/g, "-")}.json`, import.meta.url));
  writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
  writeFileSync(fileURLToPath(new URL("./results/latest.json", import.meta.url)), JSON.stringify(result, null, 2) + "\n");
  console.log(`wrote ${file}`);
}

await main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
