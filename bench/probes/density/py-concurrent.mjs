// K concurrent Pyodide creates (restore from snapshot + print(1)) in ONE process, one shared compiled Module.
// usage: node py-concurrent.mjs <K> [threads=1]  -- threads>1: K split over that many worker_threads, each one process-wide shared Module
import fs from "node:fs";
import { ROOT, SNAPSHOT } from "./common.mjs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Worker, isMainThread, workerData, parentPort } from "node:worker_threads";
const PYDIR = `${ROOT}/node_modules/pyodide`;
const SNAP = SNAPSHOT;
const cpuMs = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };
async function createMany(k, module, snapshot) {
  const { loadPyodide } = await import(pathToFileURL(path.join(PYDIR, "pyodide.mjs")).href);
  const asm = await import(pathToFileURL(path.join(PYDIR, "pyodide.asm.mjs")).href);
  const orig = WebAssembly.instantiate;
  WebAssembly.instantiate = async (src, imports) => (src instanceof WebAssembly.Module ? orig(src, imports) : { instance: await orig(module, imports), module });
  const t0 = performance.now();
  const one = async () => {
    const out = [];
    const py = await loadPyodide({ indexURL: PYDIR + path.sep, createPyodideModule: (s) => asm.default(s), jsglobals: Object.freeze(Object.create(null)),
      env: { HOME: "/home/user", PYTHONHASHSEED: "0" }, stdout: (s) => out.push(s), checkAPIVersion: true, _loadSnapshot: snapshot });
    py.runPython("print(1)");
    if (out.join("").trim() !== "1") throw new Error("bad");
    return { py, ms: performance.now() - t0 };
  };
  const r = await Promise.all(Array.from({ length: k }, one));
  return r.map((x) => x.ms);
}
if (isMainThread) {
  const K = Number(process.argv[2] ?? 20), T = Number(process.argv[3] ?? 1);
  const snapshot = new Uint8Array(new SharedArrayBuffer(fs.statSync(SNAP).size)); snapshot.set(fs.readFileSync(SNAP));
  const c0 = cpuMs();
  const module = await WebAssembly.compile(fs.readFileSync(path.join(PYDIR, "pyodide.asm.wasm")));
  const compileCpu = cpuMs() - c0;
  const c1 = cpuMs(), w1 = performance.now();
  let done;
  if (T === 1) done = await createMany(K, module, snapshot);
  else done = (await Promise.all(Array.from({ length: T }, () => new Promise((res, rej) => {
    const w = new Worker(new URL(import.meta.url), { workerData: { k: Math.ceil(K / T), module, snapshot } });
    w.on("message", res); w.on("error", rej);
  })))).flat();
  const wall = performance.now() - w1, cpu = cpuMs() - c1;
  console.log(JSON.stringify({ K, threads: T, compileCpuMs: +compileCpu.toFixed(0), wallAllMs: +wall.toFixed(0), cpuAllMs: +cpu.toFixed(0), cpuPerCreateMs: +(cpu / K).toFixed(0), lastDoneMs: +Math.max(...done).toFixed(0), load: (await import("node:os")).loadavg()[0] }));
  process.exit(0);
} else {
  const { k, module, snapshot } = workerData;
  const ms = await createMany(k, module, snapshot);
  parentPort.postMessage(ms); // keep the instances alive until main exits
  await new Promise(() => {});
}
