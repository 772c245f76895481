// JavaScript nano tier (QuickJS in Wasm in a worker process): agentbox's start-up and round trip
// beside Node's own `vm` module (no isolation worth the name: the insecure speed floor) and a bare
// quickjs-emscripten context in this process (the engine floor, no process boundary).
import vm from "node:vm";
import { newQuickJSWASMModuleFromVariant } from "quickjs-emscripten-core";
import * as variantModule from "@jitl/quickjs-wasmfile-release-sync";
import { Sandbox } from "../src/index.js";
import { rssMb, stats, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

async function run({ quick, progress }: SectionContext): Promise<SectionResult> {
  const N = { floor: quick ? 200 : 2000, cold: quick ? 3 : 10, pooled: quick ? 5 : 20, roundTrip: quick ? 200 : 2000 };
  const rows: Row[] = [];

  progress(`javascript: node:vm floor x${N.floor}`);
  const vmTimes: number[] = [];
  for (let i = 0; i < N.floor; i++) {
    const t0 = performance.now();
    vm.runInContext("1 + 1", vm.createContext({}));
    vmTimes.push(performance.now() - t0);
  }
  rows.push(stats("floor (insecure): node:vm new context + run `1 + 1`, in-process", "ms", vmTimes));

  progress(`javascript: bare QuickJS floor x${N.floor}`);
  const qjs = await newQuickJSWASMModuleFromVariant(variantModule.default as unknown as Parameters<typeof newQuickJSWASMModuleFromVariant>[0]);
  const qTimes: number[] = [];
  for (let i = 0; i < N.floor; i++) {
    const t0 = performance.now();
    const rt = qjs.newRuntime();
    const ctx = rt.newContext();
    ctx.unwrapResult(ctx.evalCode("1 + 1")).dispose();
    ctx.dispose();
    rt.dispose();
    qTimes.push(performance.now() - t0);
  }
  rows.push(stats("floor (engine): bare quickjs-emscripten runtime+context + `1 + 1`, in-process", "ms", qTimes));

  progress(`javascript: cold create x${N.cold}`);
  await Sandbox.configurePool({ size: 0 });
  const cold: number[] = [];
  for (let i = 0; i < N.cold; i++) {
    const t0 = performance.now();
    const sb = await Sandbox.create({ language: "javascript", pool: false });
    await sb.runCode("console.log(1)");
    cold.push(performance.now() - t0);
    await sb.kill();
  }
  rows.push(stats("agentbox js cold (pool 0): create → first console.log(1) result", "ms", cold));

  progress(`javascript: pooled create x${N.pooled}`);
  const pooled: number[] = [];
  const pooledTs: number[] = [];
  for (let i = 0; i < N.pooled; i++) {
    for (const [lang, out] of [["javascript", pooled], ["typescript", pooledTs]] as const) {
      await Sandbox.configurePool({ size: 2, wait: true });
      const t0 = performance.now();
      const sb = await Sandbox.create({ language: lang });
      await sb.runCode(lang === "typescript" ? "const n: number = 1; console.log(n)" : "console.log(1)");
      out.push(performance.now() - t0);
      await sb.kill();
    }
  }
  rows.push(stats("agentbox js pooled: create → first console.log(1) result", "ms", pooled));
  rows.push(stats("agentbox ts pooled: create → first (type-stripped) console.log result", "ms", pooledTs));
  await Sandbox.configurePool({ size: 0 });

  const sb = await Sandbox.create({ language: "javascript", pool: false });
  for (let i = 0; i < 200; i++) await sb.runCode("1");
  const rt: number[] = [];
  const engine: number[] = [];
  const tAll = performance.now();
  for (let i = 0; i < N.roundTrip; i++) {
    const t0 = performance.now();
    const r = await sb.runCode("x = 1");
    rt.push(performance.now() - t0);
    engine.push(r.durationMs);
  }
  const runsPerSec = N.roundTrip / ((performance.now() - tAll) / 1000);
  rows.push(stats("agentbox js runCode round trip on a live sandbox (`x = 1`)", "ms", rt));
  rows.push(stats("  of which inside the worker (parse, eval, digest)", "ms", engine));
  await new Promise((r) => setTimeout(r, 300));
  const idleRss = rssMb(sb.pid);
  await sb.kill();

  const med = (prefix: string) => rows.find((r) => r.name.startsWith(prefix))!.median;
  const summary = {
    runsPerSecond: Math.round(runsPerSec),
    idleWorkerRssMb: Math.round(idleRss),
    engineContextMs: +med("floor (engine)").toFixed(3),
  };
  const notes = [
    `runs per second, one sandbox, sequential: ${summary.runsPerSecond}`,
    `RSS of one idle JS sandbox's worker: ${summary.idleWorkerRssMb} MB`,
    `a bare QuickJS runtime+context costs ${summary.engineContextMs} ms in-process; the rest of a pooled start is the process boundary and the prelude`,
  ];
  return { rows, notes, summary };
}

export const javascript: Section = { name: "javascript", run };
