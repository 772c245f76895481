// Shared pieces of `npm run bench`: the row shape, statistics, and the section interface each
// engine's benchmark file implements (bench/python.ts, ...).
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
