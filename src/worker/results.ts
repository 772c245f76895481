// A run's rich results on their way out of a worker: each checked (the guest can hand over
// anything; a malformed one is dropped with a note on the guest's stderr), then charged against
// the output room left after stdout, stderr and the value, the way the host checks them again.
import { keepResultsWithin, type DisplayResult } from "../protocol/display.js";

export { checkResults } from "../protocol/display.js";

/** The results that fit in `roomBytes` (the first that does not, and all after it, are dropped). */
export function fitResults(results: DisplayResult[], roomBytes: number, note: (text: string) => void): { results: DisplayResult[]; cut: boolean } {
  const kept = keepResultsWithin(results, roomBytes);
  if (kept.cut) note(`display: ${results.length - (kept.results?.length ?? 0)} result(s) did not fit in the output limit (limits.outputBytes); dropped\n`);
  return { results: kept.results ?? [], cut: kept.cut };
}
