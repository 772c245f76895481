// Probe helpers (measurements for docs/ARCHITECTURE.md's density floor; not part of npm run bench).
// PYODIDE_SNAPSHOT: a snapshot file agentbox made (in $AGENTBOX_CACHE_DIR, pyodide-<version>-<hash>.snapshot).
import { fileURLToPath } from "node:url";
export const ROOT = fileURLToPath(new URL("../../../", import.meta.url)).replace(/\/$/, "");
export const SNAPSHOT = process.env.PYODIDE_SNAPSHOT ?? "";
import fs from "node:fs";
export function pss() {
  if (process.env.NOMEM) return { rssMB: 0, pssMB: 0 };
  const t = fs.readFileSync("/proc/self/smaps_rollup", "utf8");
  const g = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(t)[1]) / 1024;
  return { rssMB: g("Rss"), pssMB: g("Pss") };
}
export const cpuMs = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };
export const now = () => performance.now();
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export function gcNow() {
  if (process.env.NOMEM) return; if (globalThis.gc) { globalThis.gc(); globalThis.gc(); } }
