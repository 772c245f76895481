// Probe (not part of npm run bench): pooled create → first result, and the taken worker's CPU for
// it, for Python and JavaScript at one create per INTERVAL ms (default 1000). Built code only
// (npm run build); ROOT (default: this checkout) picks which build, so two builds can be compared
// alternately from one script. One JSON line on stdout per language.
//
//   AGENTBOX_CACHE_DIR=... node bench/probes/pooled/first-result.mjs [n] [intervalMs] [root]
//
// Worker CPU: the taken worker's threads' on-CPU time (/proc/<pid>/task/*/schedstat, ns) from just
// before Sandbox.create to the first result; the taken worker is the pool's one whose CPU moved
// (the pool's idle workers stay idle; the refill spawns new pids, which are not counted).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [nArg, intervalArg, rootArg] = process.argv.slice(2);
const n = Number(nArg ?? 10);
const intervalMs = Number(intervalArg ?? 1000);
const root = path.resolve(rootArg ?? fileURLToPath(new URL("../../../", import.meta.url)));
const { Sandbox } = await import(pathToFileURL(path.join(root, "dist/index.js")).href);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Worker processes of this build. */
function workerPids() {
  const needle = path.join(root, "dist/worker/");
  const out = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/cmdline`, "utf8").includes(needle)) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/** On-CPU time of all of `pid`'s living threads, ms (schedstat: ns). */
function cpuMs(pid) {
  let ns = 0;
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        // thread ended
      }
    }
  } catch {
    return NaN;
  }
  return ns / 1e6;
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

for (const [language, code] of [["python", "print(1)"], ["javascript", "console.log(1)"]]) {
  await Sandbox.configurePool({ size: 2, wait: true });
  // Two takes first: the pool's refill settles into its steady pace.
  for (let i = 0; i < 2; i++) {
    const sb = await Sandbox.create({ language });
    await sb.runCode(code);
    await sb.kill();
    await sleep(intervalMs);
  }
  await Sandbox.configurePool({ size: 2, wait: true });
  const wall = [];
  const cpu = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await sleep(Math.max(0, t0 + i * intervalMs - performance.now()));
    const before = new Map(workerPids().map((p) => [p, cpuMs(p)]));
    const s = performance.now();
    const sb = await Sandbox.create({ language });
    const r = await sb.runCode(code);
    wall.push(performance.now() - s);
    let taken = 0;
    for (const [p, c] of before) taken = Math.max(taken, cpuMs(p) - c);
    cpu.push(taken);
    if (!String(r.stdout ?? r.logs?.stdout ?? "").includes("1") && r.error) throw new Error(`run failed: ${JSON.stringify(r.error)}`);
    await sb.kill();
  }
  const f = (x) => +x.toFixed(2);
  console.log(JSON.stringify({ root, language, n, intervalMs, wallP50: f(quantile(wall, 0.5)), wallP90: f(quantile(wall, 0.9)), cpuP50: f(quantile(cpu, 0.5)), load: fs.readFileSync("/proc/loadavg", "utf8").split(" ")[0] }));
}
await Sandbox.configurePool({ size: 0 });
