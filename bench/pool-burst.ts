// Fixed vs adaptive pool under a trickle burst: 12 creates 0.4 s apart, each create → runCode("1")
// → kill, timed from create to its first result; then, once the pool has filled to its target
// (at most 20 s), the same burst again (the adaptive pool has grown by then). One pool setting per process, the Python pool warmed first.
//   node --import tsx bench/pool-burst.ts fixed|adaptive [python|javascript]
import { Sandbox } from "../src/index.js";
import { poolStats } from "../src/engines/pools.js";

const mode = process.argv[2] ?? "fixed";
const language = (process.argv[3] ?? "python") as "python" | "javascript";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function burst(): Promise<number[]> {
  const runs: Promise<number>[] = [];
  for (let i = 0; i < 12; i++) {
    runs.push(
      (async () => {
        const t0 = performance.now();
        const sb = await Sandbox.create({ language });
        await sb.runCode("1");
        const ms = performance.now() - t0;
        await sb.kill();
        return ms;
      })(),
    );
    await sleep(400);
  }
  return Promise.all(runs);
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] as number;
const show = (label: string, xs: number[]) => console.log(`${mode} ${language} ${label}: p50 ${pct(xs, 50).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms, >500 ms: ${xs.filter((x) => x > 500).length}/12`);

await Sandbox.configurePool(mode === "adaptive" ? { min: 2, max: 8, memoryBudgetMb: 2048, wait: true } : { size: 2, wait: true });
if (language === "javascript") {
  // The JavaScript pool is made on first use: make it and let it fill.
  await (await Sandbox.create({ language })).kill();
  while ((poolStats().javascript?.ready ?? 0) < 2) await sleep(50);
}
await sleep(1000);
show("burst 1", await burst());
console.log(JSON.stringify(poolStats()[language]));
// Let the pool fill to its target (at most 20 s: the adaptive one's burst ages out after 30 s).
const t = Date.now();
while (Date.now() - t < 20_000 && (poolStats()[language]?.ready ?? 0) < (poolStats()[language]?.target ?? 0)) await sleep(100);
await sleep(1000);
console.log(`after ${((Date.now() - t) / 1000).toFixed(1)} s: ${JSON.stringify(poolStats()[language])}`);
show("burst 2", await burst());
await Sandbox.shutdownPool();
