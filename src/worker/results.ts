// A run's rich results on their way out of a worker: each checked (the guest can hand over
// anything; a malformed one is dropped with a note on the guest's stderr), then charged against
// the output room left after stdout, stderr and the value, the way the host checks them again.
import { displayResultProblem, keepResultsWithin, MAX_RESULTS, type DisplayResult } from "../protocol/display.js";

/** The well-formed results in `raw`; a note for each one dropped. */
export function checkResults(raw: unknown, note: (text: string) => void): DisplayResult[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    note("display: the run's results were not a list; dropped\n");
    return [];
  }
  const ok: DisplayResult[] = [];
  for (const r of raw.slice(0, MAX_RESULTS)) {
    const problem = displayResultProblem(r);
    if (problem) note(`display: a malformed result was dropped: ${problem}\n`);
    else ok.push(r as DisplayResult);
  }
  if (raw.length > MAX_RESULTS) note(`display: only the first ${MAX_RESULTS} results are kept\n`);
  return ok;
}

/** The results that fit in `roomBytes` (the first that does not, and all after it, are dropped). */
export function fitResults(results: DisplayResult[], roomBytes: number, note: (text: string) => void): { results: DisplayResult[]; cut: boolean } {
  const kept = keepResultsWithin(results, roomBytes);
  if (kept.cut) note(`display: ${results.length - (kept.results?.length ?? 0)} result(s) did not fit in the output limit (limits.outputBytes); dropped\n`);
  return { results: kept.results ?? [], cut: kept.cut };
}
