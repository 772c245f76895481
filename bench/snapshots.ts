// Nano-tier snapshots by replay (engines/replay): snapshot → restore → first result of a sandbox
// with a short history (three cells and a host write), Python and JavaScript, pooled workers
// (target ≤ 20 ms p50), and fork(10) of such a sandbox with ten ready workers.
import { Sandbox } from "../src/index.js";
import { stats, timed, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

const HISTORY = {
  python: ["import json, random\nstate = {'n': 1}", "def step(s):\n    s['n'] += 1\n    return s\nstep(state)", "random.random()"],
  javascript: ["globalThis.state = { n: 1 }", "globalThis.step = (s) => { s.n += 1; return s }; step(state)", "Math.random()"],
} as const;
const FIRST = { python: "json.dumps(step(state))", javascript: "JSON.stringify(step(state))" } as const;

async function withHistory(language: "python" | "javascript"): Promise<Sandbox> {
  const sb = await Sandbox.create({ language, seed: 1 });
  for (const code of HISTORY[language]) await sb.runCode(code);
  await sb.files.write("/home/user/input.txt", "some input");
  return sb;
}

async function run({ quick, progress }: SectionContext): Promise<SectionResult> {
  const N = { restore: quick ? 5 : 30, fork: quick ? 2 : 5 };
  const rows: Row[] = [];
  const summary: Record<string, unknown> = {};
  const poolSize = 2;
  await Sandbox.configurePool({ size: poolSize, wait: true });
  for (const language of ["python", "javascript"] as const) {
    progress(`snapshots: ${language} snapshot → restore → first result x${N.restore}`);
    const sb = await withHistory(language);
    const xs: number[] = [];
    for (let i = 0; i < N.restore; i++) {
      await Sandbox.configurePool({ size: poolSize, wait: true });
      let copy: Sandbox | undefined;
      xs.push(
        await timed(async () => {
          const snap = await sb.snapshot();
          copy = await Sandbox.restore(snap);
          await copy.runCode(FIRST[language]);
          await snap.remove();
        }),
      );
      await copy?.kill();
    }
    const row = stats(`${language} nano: snapshot → restore → first result (3 cells + 1 host write, pooled)`, "ms", xs);
    rows.push(row);
    summary[`${language}RestoreMedianMs`] = row.median;
    await sb.kill();
  }
  progress(`snapshots: python fork(10) x${N.fork}`);
  // Ten ready workers: the row measures the copies (start, replay, files), not ten cold starts.
  await Sandbox.configurePool({ size: 10, wait: true });
  const sb = await withHistory("python");
  const forks: number[] = [];
  for (let i = 0; i < N.fork; i++) {
    await Sandbox.configurePool({ size: 10, wait: true });
    let made: Sandbox[] = [];
    forks.push(await timed(async () => void (made = await sb.fork(10))));
    await Promise.all(made.map((f) => f.kill()));
  }
  const forkRow = stats(`python nano: fork(10) (pool of 10 ready workers)`, "ms", forks);
  rows.push(forkRow);
  summary.pythonFork10MedianMs = forkRow.median;
  await sb.kill();
  await Sandbox.configurePool({ size: 0 });
  const restoreMs = summary.pythonRestoreMedianMs as number;
  return { rows, notes: [`python snapshot → restore → first result p50 ${restoreMs.toFixed(1)} ms (target ≤ 20 ms)`], summary };
}

export const snapshots: Section = { name: "snapshots", run };
