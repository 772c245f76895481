// Example for `agentbox run examples/analyze.ts --seed 7`: TypeScript in the QuickJS nano tier.
// Types are stripped before it runs; `fs` is the sandbox's in-memory file system.
import fs from "fs";

interface Visit {
  day: number;
  visits: number;
}

fs.mkdirSync("/data", { recursive: true });
const rows: Visit[] = Array.from({ length: 7 }, (_, day) => ({ day, visits: Math.floor(Math.random() * 100) }));
fs.writeFileSync("/data/visits.json", JSON.stringify(rows));

const loaded: Visit[] = JSON.parse(fs.readFileSync("/data/visits.json", "utf8"));
const mean = loaded.reduce((s, r) => s + r.visits, 0) / loaded.length;
await new Promise((resolve) => setTimeout(resolve, 10));
console.log(JSON.stringify({ days: loaded.length, visits_mean: Number(mean.toFixed(2)) }));
