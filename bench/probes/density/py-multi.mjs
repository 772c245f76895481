// N Pyodide instances in ONE process, each restored from the same memory snapshot.
// usage: node --expose-gc py-multi.mjs <shared|unshared> <N> <snapshotFile>
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { pss, cpuMs, now, sleep, gcNow , ROOT, SNAPSHOT } from "./common.mjs";
const [mode = "shared", nStr = "10", snapFile = SNAPSHOT, settleStr = "400"] = process.argv.slice(2);
const N = Number(nStr), SETTLE = Number(settleStr);
const PYDIR = `${ROOT}/node_modules/pyodide`;
const cpu0 = cpuMs(), wall0 = now();
gcNow();
const base = { ...pss(), cpuMs: cpuMs(), wallMs: now() - wall0, bootCpuSinceStart: process.cpuUsage() };
const { loadPyodide } = await import(pathToFileURL(path.join(PYDIR, "pyodide.mjs")).href);
const asm = await import(pathToFileURL(path.join(PYDIR, "pyodide.asm.mjs")).href);
const snapshot = fs.readFileSync(snapFile); // read once, shared (read-only) by every instance
const t_imp = { cpuMs: cpuMs() - base.cpuMs };

let shared = null, compileCpu = 0, compileWall = 0;
const origInstantiate = WebAssembly.instantiate;
let mark = {};
if (mode === "shared") {
  const c0 = cpuMs(), w0 = now();
  shared = await WebAssembly.compile(fs.readFileSync(path.join(PYDIR, "pyodide.asm.wasm")));
  compileCpu = cpuMs() - c0; compileWall = now() - w0;
}
WebAssembly.instantiate = async function (src, imports) {
  mark.instStartCpu = cpuMs(); mark.instStartWall = now();
  let r;
  if (shared && !(src instanceof WebAssembly.Module)) r = { instance: await origInstantiate(shared, imports), module: shared };
  else r = await origInstantiate(src, imports);
  mark.instEndCpu = cpuMs(); mark.instEndWall = now();
  return r;
};
const createPyodideModule = (settings) => asm.default(settings);
// SPARSE=1: restore copies only the snapshot's non-zero 4 KiB pages into the (fresh, zeroed) Wasm memory,
// instead of Pyodide's HEAP8.set(whole snapshot), which dirties every page. Ranges computed once per process.
if (process.env.SPARSE) {
  const origSet = Int8Array.prototype.set;
  let ranges = null;
  Int8Array.prototype.set = function (src, off = 0) {
    if (off !== 0 || !(src instanceof Uint8Array) || src.length < (8 << 20) || src.length > this.length) return origSet.call(this, src, off);
    if (!ranges) {
      ranges = [];
      const P = 4096, w = new BigUint64Array(src.buffer, src.byteOffset, Math.floor(src.length / 8));
      let start = -1;
      for (let p = 0; p * P < src.length; p++) {
        let nz = false;
        for (let j = p * 512, e = Math.min(j + 512, w.length); j < e; j++) if (w[j] !== 0n) { nz = true; break; }
        if (p * P + P > w.length * 8) nz = true;
        if (nz && start < 0) start = p * P;
        if (!nz && start >= 0) { ranges.push([start, p * P]); start = -1; }
      }
      if (start >= 0) ranges.push([start, src.length]);
    }
    const dst = new Uint8Array(this.buffer, this.byteOffset, this.length);
    let prev = 0;
    const d64 = new BigUint64Array(this.buffer, this.byteOffset, Math.floor(Math.min(this.length, src.length) / 8));
    const zeroGap = (a, b) => { // pages the snapshot has as zero: clear only those the instance already wrote (data segments)
      for (let j = a / 8; j < b / 8; j += 512) {
        for (let k = j, e = Math.min(j + 512, d64.length); k < e; k++) if (d64[k] !== 0n) { dst.fill(0, j * 8, Math.min(j * 8 + 4096, b)); break; }
      }
    };
    for (const [a, b] of ranges) { zeroGap(prev, a); dst.set(src.subarray(a, Math.min(b, src.length)), a); prev = b; }
    zeroGap(prev, Math.floor(src.length / 4096) * 4096);
  };
}
gcNow();
const afterSetup = pss();
const rows = [];
const keep = [];
for (let i = 1; i <= N; i++) {
  mark = {};
  if (i === 2 && process.env.PROFMARK) console.error('MARK2', Number(process.hrtime.bigint() / 1000n));
  const out = [];
  const c0 = cpuMs(), w0 = now();
  const py = await loadPyodide({
    indexURL: PYDIR + path.sep, createPyodideModule,
    jsglobals: Object.freeze(Object.create(null)),
    env: { HOME: "/home/user", PYTHONHASHSEED: "0", LANG: "C.UTF-8", TZ: "UTC" },
    stdout: (s) => out.push(s), stderr: (s) => out.push(s), checkAPIVersion: true,
    _loadSnapshot: snapshot,
  });
  const c1 = cpuMs(), w1 = now();
  py.runPython("print(1)");
  if (process.env.SPARSE) { const v = py.runPython("import json, re; json.dumps({'a': [1, 2, re.sub('b', 'c', 'abc')]})"); if (v !== '{"a": [1, 2, "acc"]}') throw new Error("sparse restore broke: " + v); }
  const c2 = cpuMs(), w2 = now();
  if (out.join("").trim() !== "1") throw new Error("unexpected output: " + JSON.stringify(out));
  keep.push(py);
  await sleep(SETTLE); // let background tier-up finish, count its CPU
  const c3 = cpuMs();
  gcNow();
  const m = pss();
  rows.push({
    i,
    wallMs: +(w2 - w0).toFixed(1), cpuMs: +(c2 - c0).toFixed(1), cpuInclSettleMs: +(c3 - c0).toFixed(1),
    preInstCpu: +(mark.instStartCpu - c0).toFixed(1), instCpu: +(mark.instEndCpu - mark.instStartCpu).toFixed(1),
    instWall: +(mark.instEndWall - mark.instStartWall).toFixed(1),
    restoreCpu: +(c1 - mark.instEndCpu).toFixed(1), restoreWall: +(w1 - mark.instEndWall).toFixed(1),
    firstRunCpu: +(c2 - c1).toFixed(1), firstRunWall: +(w2 - w1).toFixed(1),
    rssMB: +m.rssMB.toFixed(1), pssMB: +m.pssMB.toFixed(1), wasmMemMB: +(py._module.HEAP8.length/1048576).toFixed(1), ...Object.fromEntries(Object.entries(process.memoryUsage()).filter(([k])=>k!=='rss').map(([k,v])=>[k+'MB', +(v/1048576).toFixed(1)])),
  });
}
const r1 = rows[0], rN = rows[N - 1];
const res = {
  mode, N, node: process.version,
  processStart: { pssMB: +base.pssMB.toFixed(1), rssMB: +base.rssMB.toFixed(1), cpuMsToScriptStart: +cpu0.toFixed(1) },
  importCpuMs: +t_imp.cpuMs.toFixed(1), sharedCompile: { cpuMs: +compileCpu.toFixed(1), wallMs: +compileWall.toFixed(1) },
  afterSetupPssMB: +afterSetup.pssMB.toFixed(1),
  rows,
  inst1PssMB: +(r1.pssMB - afterSetup.pssMB).toFixed(1),
  marginalPssMB: +((rN.pssMB - r1.pssMB) / (N - 1)).toFixed(1),
  marginalRssMB: +((rN.rssMB - r1.rssMB) / (N - 1)).toFixed(1),
};
console.log(JSON.stringify(res));
process.exit(0);
