// Shared pieces of `npm run bench`: the row shape, statistics, and the section interface each
// engine's benchmark file implements (bench/python.ts, ...), and /proc readers.
import { readdirSync, readFileSync } from "node:fs";

export interface Row {
  name: string;
  unit: string;
  n: number;
  median: number;
  p95: number;
  min: number;
}

export function stats(name: string, unit: string, xs: number[]): Row {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { name, unit, n: s.length, median: at(0.5), p95: at(0.95), min: s[0]! };
}

export interface SectionContext {
  quick: boolean;
  progress: (s: string) => void;
}

export interface SectionResult {
  rows: Row[];
  /** Lines printed under the table (derived figures, targets). */
  notes: string[];
  /** Machine-readable summary stored in the JSON result under the section's name. */
  summary: Record<string, unknown>;
}

export interface Section {
  name: string;
  run(ctx: SectionContext): Promise<SectionResult>;
}

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Resident memory of process `pid` (VmRSS), MB. */
export function rssMb(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** Rss and Pss (shared pages split among their sharers) of process `pid`, MB; undefined once it is gone. */
export function smapsMb(pid: number): { rss: number; pss: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN);
    return { rss: kb("Rss") / 1024, pss: kb("Pss") / 1024 };
  } catch {
    return undefined;
  }
}

/** Resident memory (Rss) of every process whose command line contains `needle`, summed, MB. */
export function rssOfMatchingMb(needle: string): number {
  return pidsWithCmdline(needle).reduce((n, pid) => n + (smapsMb(pid)?.rss ?? 0), 0);
}

/** Pids of every process whose command line contains `needle`. */
export function pidsWithCmdline(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").includes(needle)) out.push(Number(d));
    } catch {
      // gone while we looked
    }
  }
  return out;
}
