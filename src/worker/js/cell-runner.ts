// One cell from code to `result` frame: TypeScript stripped (Sucrase), the cell rewritten
// (js-cell.ts), evaluated as an async global script, driven to completion by the event loop, its
// value displayed, and the limit it hit (output, time, memory, VFS) named. Its display() results
// went out as they happened (Output).
import type { transform as SucraseTransform } from "sucrase";
import { beginRun, cutUtf8, realNow, REASON_OUTPUT } from "../common.js";
import { CellSyntaxError, rewriteCell, type Parse } from "../js-cell.js";
import type { GuestContext } from "./context.js";
import type { EventLoop } from "./event-loop.js";
import type { FetchBridge } from "./fetch-bridge.js";
import type { FsBridge } from "./fs-bridge.js";
import type { Output } from "./output.js";
import type { GuestError, Reporter } from "./report.js";
import { epilogue, memCap, stopRequested, words } from "./state.js";

export type Transform = typeof SucraseTransform;

/** QuickJS's JS_EVAL_FLAG_ASYNC: a global script with top-level await; evaluates to a promise. */
const EVAL_FLAG_ASYNC = 1 << 7;
const REASON_TIMEOUT = 1;

export interface CellRunnerParts {
  guest: GuestContext;
  reporter: Reporter;
  loop: EventLoop;
  output: Output;
  fs: FsBridge;
  fetch: FetchBridge;
  send: (message: unknown) => void;
  outputBytes: number;
  typescript: boolean;
  loadSucrase: () => Transform;
  parse: Parse;
}

export class CellRunner {
  private cell = 0;

  constructor(private readonly p: CellRunnerParts) {}

  run(id: number, code: string): void {
    const { guest, reporter, loop, output, fs } = this.p;
    const { ctx, rt } = guest;
    const t0 = realNow();
    beginRun(words, id);
    epilogue.untilMs = 0;
    fs.tree.takeLimitHit();
    memCap.hit = false;
    output.start(id, this.p.outputBytes);
    const file = `cell-${++this.cell}.${this.p.typescript ? "ts" : "js"}`;
    let value: string | null = null;
    let error: GuestError | null = null;
    let source: string | undefined;
    try {
      source = rewriteCell(this.p.typescript ? this.stripTypes(code) : code, this.p.parse);
    } catch (e) {
      if (!(e instanceof CellSyntaxError)) throw e;
      error = { name: "SyntaxError", message: `${e.message} (line ${e.line}, column ${e.column})`, traceback: `SyntaxError: ${e.message}\n    at ${file}:${e.line}:${e.column}\n` };
    }
    if (source !== undefined) {
      const r = ctx.evalCode(source, file, EVAL_FLAG_ASYNC);
      if (r.error) {
        using thrown = r.error;
        error = reporter.describe(thrown);
      } else {
        using promise = r.value;
        const settled = loop.drive(promise);
        if (settled.error) error = settled.error;
        else if (settled.value) {
          using result = settled.value;
          value = reporter.show(result);
        }
        // Timers still queued run now, as a script's would before it exits.
        if (!error) error = loop.drainTimers();
        if (error) value = null;
      }
    }
    const reason = Atomics.load(words, 1);
    const interrupted = stopRequested();
    if (interrupted) {
      // A stopped run's timers die with it: a runaway interval must not resume in the next run.
      const r = reporter.inEpilogue(() => ctx.callFunction(guest.hooks.clearTimers, ctx.undefined));
      (r.error ?? r.value).dispose();
    }
    this.p.fetch.endRun();
    Atomics.store(words, 2, 0);
    Atomics.store(words, 0, 0);
    epilogue.untilMs = 0;
    rt.executePendingJobs(0);
    if (value !== null) {
      const room = Math.max(0, this.p.outputBytes - output.bytes);
      if (Buffer.byteLength(value) > room) {
        value = cutUtf8(value, room);
        output.hit = true;
      }
    }
    if (output.resultsCut) output.hit = true;
    output.end();
    const vfsHit = fs.tree.takeLimitHit();
    const memHit = memCap.hit || (error !== null && error.name === "InternalError" && /out of memory/.test(error.message));
    const limitHit =
      output.hit || reason === REASON_OUTPUT ? "outputBytes"
      : interrupted && reason === REASON_TIMEOUT ? "timeoutMs"
      : memHit ? "memoryMb"
      : vfsHit ?? null;
    this.p.send({ type: "result", id, value, error, limitHit, durationMs: realNow() - t0, vfsDigest: fs.tree.digest() });
  }

  private stripTypes(code: string): string {
    try {
      return this.p.loadSucrase()(code, { transforms: ["typescript"], disableESTransforms: true, keepUnusedImports: false }).code;
    } catch (e) {
      const err = e as Error & { loc?: { line: number; column: number } };
      if (!err.loc) throw new CellSyntaxError(err.message, 1, 1);
      // Sucrase's columns are 1-based already; its message ends in "(line:column)".
      throw new CellSyntaxError(err.message.replace(/ \(\d+:\d+\)$/, ""), err.loc.line, err.loc.column);
    }
  }
}
