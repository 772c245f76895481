// `npm run bench [-- --quick] [-- --only python,...]`: every engine's start-up and round-trip
// costs beside their baselines, measured in one process run. Prints a table (median, p95) and
// writes JSON to bench/results/ (a timestamped file and latest.json).
import { writeFileSync } from "node:fs";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { javascript } from "./javascript.js";
import { cluster } from "./cluster.js";
import { data } from "./data.js";
import { density } from "./density.js";
import { e2b } from "./e2b.js";
import { heavy } from "./heavy.js";
import { microvm } from "./microvm.js";
import { lifecycle } from "./lifecycle.js";
import { network } from "./network.js";
import type { Row, Section } from "./lib.js";
import { python } from "./python.js";
import { server } from "./server.js";
import { snapshots } from "./snapshots.js";

/** Every section, in the order they run. A new engine adds its section here. */
const SECTIONS: Section[] = [python, javascript, density, snapshots, server, heavy, data, network, lifecycle, e2b, microvm, cluster];

async function main(): Promise<void> {
  const quick = process.argv.includes("--quick");
  const onlyArg = process.argv.find((a) => a.startsWith("--only="));
  const only = onlyArg ? new Set(onlyArg.slice("--only=".length).split(",")) : undefined;
  const progress = (s: string) => process.stderr.write(`bench: ${s}\n`);
  const rows: Row[] = [];
  const notes: string[] = [];
  const summary: Record<string, unknown> = {};
  for (const section of SECTIONS) {
    if (only && !only.has(section.name)) continue;
    const r = await section.run({ quick, progress });
    rows.push(...r.rows);
    notes.push(...r.notes.map((n) => `${section.name}: ${n}`));
    summary[section.name] = r.summary;
  }

  const w = Math.max(...rows.map((r) => r.name.length));
  console.log(`${"benchmark".padEnd(w)}  ${"n".padStart(5)}  ${"median".padStart(9)}  ${"p95".padStart(9)}  ${"min".padStart(9)}`);
  for (const r of rows) {
    const fmt = (x: number) => `${x.toFixed(2).padStart(7)}${r.unit.padEnd(2)}`;
    console.log(`${r.name.padEnd(w)}  ${String(r.n).padStart(5)}  ${fmt(r.median)}  ${fmt(r.p95)}  ${fmt(r.min)}`);
  }
  for (const n of notes) console.log(n);

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
