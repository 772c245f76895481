// N QuickJS sandboxes in ONE process.
// usage: node --expose-gc js-multi.mjs <shared|unshared|runtimes> <N> [prelude=1]
// shared: one compiled WebAssembly.Module, a fresh Wasm instance+memory per sandbox (as agentbox's worker does, once)
// unshared: WebAssembly.compile per sandbox; runtimes: ONE Wasm instance, a QuickJS runtime+context per sandbox
import fs from "node:fs";
import path from "node:path";
import { pss, cpuMs, now, sleep, gcNow , ROOT } from "./common.mjs";
const [mode = "shared", nStr = "10", preludeStr = "1", settleStr = "200"] = process.argv.slice(2);
const N = Number(nStr), PRELUDE = preludeStr === "1", SETTLE = Number(settleStr);
const cpu0 = cpuMs();
gcNow();
const base = pss();
const NM = `${ROOT}/node_modules`;
const core = await import(`${NM}/quickjs-emscripten-core/dist/index.mjs`);
const variantEntry = `${NM}/@jitl/quickjs-wasmfile-release-sync/dist/index.mjs`;
const variant = (await import(variantEntry)).default;
const wasmBytes = fs.readFileSync(path.join(path.dirname(variantEntry), "emscripten-module.wasm"));
const prelude = `(${fs.readFileSync(`${ROOT}/dist/worker/js/prelude.guest.js`, "utf8")}\n)`;
const importCpu = cpuMs() - cpu0;
let shared = null, compileCpu = 0;
if (mode !== "unshared") { const c = cpuMs(); shared = await WebAssembly.compile(wasmBytes); compileCpu = cpuMs() - c; }
let oneQjs = null;
gcNow();
const afterSetup = pss();
const rows = [], keep = [];
for (let i = 1; i <= N; i++) {
  const c0 = cpuMs(), w0 = now();
  let qjs;
  if (mode === "runtimes" && oneQjs) qjs = oneQjs;
  else {
    const mod = shared ?? await WebAssembly.compile(wasmBytes);
    const mem = new WebAssembly.Memory({ initial: 256, maximum: 32768 });
    qjs = await core.newQuickJSWASMModuleFromVariant(core.newVariant(variant, { wasmModule: mod, wasmMemory: mem }));
    if (mode === "runtimes") oneQjs = qjs;
  }
  const c1 = cpuMs();
  const rt = qjs.newRuntime();
  rt.setMemoryLimit(256 << 20); rt.setMaxStackSize(256 * 1024);
  const ctx = rt.newContext();
  let hooksOk = "-";
  if (PRELUDE) {
    const fn = ctx.unwrapResult(ctx.evalCode(prelude, "<agentbox>", { type: "global", strict: true }));
    const host = ctx.newObject();
    const r = ctx.callFunction(fn, ctx.undefined, host);
    if (r.error) { hooksOk = "err:" + JSON.stringify(ctx.dump(r.error)).slice(0, 80); r.error.dispose(); } else { hooksOk = "ok"; r.value.dispose(); }
    host.dispose(); fn.dispose();
  }
  const c2 = cpuMs();
  const v = ctx.unwrapResult(ctx.evalCode("1+1"));
  const val = ctx.getNumber(v); v.dispose();
  const c3 = cpuMs(), w3 = now();
  if (val !== 2) throw new Error("bad result");
  keep.push({ qjs, rt, ctx });
  await sleep(SETTLE);
  const c4 = cpuMs();
  gcNow();
  const m = pss();
  rows.push({ i, wallMs: +(w3 - w0).toFixed(1), cpuMs: +(c3 - c0).toFixed(1), cpuInclSettleMs: +(c4 - c0).toFixed(1),
    instCpu: +(c1 - c0).toFixed(1), ctxPreludeCpu: +(c2 - c1).toFixed(1), firstEvalCpu: +(c3 - c2).toFixed(1), prelude: hooksOk,
    rssMB: +m.rssMB.toFixed(1), pssMB: +m.pssMB.toFixed(1) });
}
const r1 = rows[0], rN = rows[N - 1];
console.log(JSON.stringify({ mode, N, prelude: PRELUDE, startPssMB: +base.pssMB.toFixed(1), cpuMsToScriptStart: +cpu0.toFixed(1), importCpuMs: +importCpu.toFixed(1),
  compileCpuMs: +compileCpu.toFixed(1), afterSetupPssMB: +afterSetup.pssMB.toFixed(1), rows,
  inst1PssMB: +(r1.pssMB - afterSetup.pssMB).toFixed(1), marginalPssMB: +((rN.pssMB - r1.pssMB) / (N - 1)).toFixed(2) }));
process.exit(0);
