// Rich results (Jupyter-style MIME bundles) as they cross from a guest to the host: the MIME types
// a bundle may hold, a check of one bundle that never trusts its shape, and the byte count that
// results are charged against `limits.outputBytes`. Results travel in their own field of the
// `result` frame (never parsed out of stdout), so printed text cannot forge one. No zod here: the
// worker imports this module (its file-read permission covers our dist/ only); the host's zod
// schemas built on these checks are in messages.ts.

export const MIME_TYPES = [
  "text/plain",
  "text/html",
  "text/markdown",
  "image/png",
  "image/jpeg",
  "image/svg+xml",
  "application/json",
  "application/pdf",
] as const;
export type MimeType = (typeof MIME_TYPES)[number];

/** Types whose data is binary, carried as base64 text. */
export const BINARY_MIME_TYPES: ReadonlySet<string> = new Set(["image/png", "image/jpeg", "application/pdf"]);

/** Most results one run may carry (each still counts against the output cap). */
export const MAX_RESULTS = 1000;

/** One displayed object: `main` marks the cell's final expression (Jupyter's execute_result). */
export interface DisplayResult {
  data: Partial<Record<MimeType, string>>;
  main: boolean;
}

const MIME_SET: ReadonlySet<string> = new Set(MIME_TYPES);
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** What is wrong with `x` as a display result, or null when it is a well-formed one. */
export function displayResultProblem(x: unknown): string | null {
  if (typeof x !== "object" || x === null || Array.isArray(x)) return "a result must be an object";
  const keys = Object.keys(x);
  if (keys.some((k) => k !== "data" && k !== "main")) return "a result has only `data` and `main`";
  const { data, main } = x as { data?: unknown; main?: unknown };
  if (typeof main !== "boolean") return "`main` must be a boolean";
  if (typeof data !== "object" || data === null || Array.isArray(data)) return "`data` must be an object of MIME type to string";
  const entries = Object.entries(data);
  if (entries.length === 0) return "`data` is empty";
  for (const [mime, value] of entries) {
    if (!MIME_SET.has(mime)) return `unknown MIME type ${JSON.stringify(mime.slice(0, 64))} (allowed: ${MIME_TYPES.join(", ")})`;
    if (typeof value !== "string") return `${mime} data must be a string`;
    if (BINARY_MIME_TYPES.has(mime) && (value.length % 4 !== 0 || !BASE64.test(value))) return `${mime} data must be base64`;
  }
  return null;
}

/** Bytes a result counts against `limits.outputBytes`: its data's text, as UTF-8. */
export function displayResultBytes(r: DisplayResult): number {
  let n = 0;
  for (const v of Object.values(r.data)) n += Buffer.byteLength(v ?? "");
  return n;
}

/**
 * The results that fit in `roomBytes`, in order; `cut` when one did not (it and every later one
 * are dropped: a partial image or HTML document is worse than none). The host's second check of
 * the output cap, after the worker's own.
 */
export function keepResultsWithin(results: readonly DisplayResult[] | undefined, roomBytes: number): { results: DisplayResult[] | undefined; cut: boolean } {
  if (!results || results.length === 0) return { results: undefined, cut: false };
  let room = roomBytes;
  const kept: DisplayResult[] = [];
  for (const r of results) {
    const n = displayResultBytes(r);
    if (n > room) return { results: kept.length > 0 ? kept : undefined, cut: true };
    room -= n;
    kept.push(r);
  }
  return { results: kept, cut: false };
}

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
