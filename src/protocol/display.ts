// Rich results (Jupyter-style MIME bundles) as they cross from a guest to the host: the MIME types
// a bundle may hold, a check of one bundle that never trusts its shape, and the byte count that
// results are charged against `limits.outputBytes`, and the gate every result passes on its way
// (worker, then host). Results travel in frames of their own (`display`, one per result as it
// happens; never parsed out of stdout), so printed text cannot forge one. No zod here: the worker
// imports this module (its file-read permission covers our dist/ only); the host's zod schemas
// built on these checks are in messages.ts and agent.ts.

export const MIME_TYPES = [
  "text/plain",
  "text/html",
  "text/markdown",
  "image/png",
  "image/jpeg",
  "image/svg+xml",
  "application/json",
  "application/pdf",
  // A matplotlib figure's data (chart type, title, labels, ticks, plotted elements) in the shape of
  // E2B's code interpreter `chart`, beside its image/png (guest/display.py). JSON text.
  "application/vnd.agentbox.chart+json",
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

/** The output cap a run's results share with its stdout and stderr. */
export interface OutputBudget {
  /** Bytes of `limits.outputBytes` still free. */
  room(): number;
  /** Count `n` more bytes as used. */
  charge(n: number): void;
}

/**
 * One run's results as they arrive from a guest (the worker's first check, the host's second):
 * each checked (a malformed one is dropped with a note), at most MAX_RESULTS looked at, each
 * charged against the output cap when it fits and dropped with a note when it does not (`cut`:
 * the run hit the output limit; a later, smaller result may still fit, as in the guests). A result
 * that passes is kept, in order, and handed to `pass` at once, while the run goes on.
 */
export class ResultGate {
  readonly results: DisplayResult[] = [];
  cut = false;
  private seen = 0;

  constructor(
    private readonly budget: OutputBudget,
    private readonly note: (text: string) => void,
    private readonly pass?: (r: DisplayResult) => void,
  ) {}

  add(raw: unknown): void {
    if (++this.seen > MAX_RESULTS) {
      if (this.seen === MAX_RESULTS + 1) this.note(`display: only the first ${MAX_RESULTS} results are kept\n`);
      return;
    }
    const problem = displayResultProblem(raw);
    if (problem) return this.note(`display: a malformed result was dropped: ${problem}\n`);
    const checked = raw as DisplayResult;
    // A copy of only what was checked, so nothing else the guest attached travels on.
    const r: DisplayResult = { data: { ...checked.data }, main: checked.main };
    const n = displayResultBytes(r);
    if (n > this.budget.room()) {
      this.cut = true;
      return this.note(`display: a result of ${n} bytes did not fit in the output limit (limits.outputBytes); dropped\n`);
    }
    this.budget.charge(n);
    this.results.push(r);
    this.pass?.(r);
  }
}
