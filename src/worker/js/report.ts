// What the host is told about guest values: an error's name, message and traceback (prelude
// frames cut, QuickJS's stack overflow named as other engines name it) and a result's display.
// Both call into the guest; after a stopped run they do so within a short epilogue deadline.
import type { QuickJSContext, QuickJSHandle } from "quickjs-emscripten-core";
import { realNow } from "../common.js";
import type { GuestContext } from "./context.js";
import type { Output } from "./output.js";
import { PRELUDE_FILE } from "./prelude.js";
import { epilogue, stopRequested, words } from "./state.js";

export type GuestError = { name: string; message: string; traceback: string };

/** Time the worker gives itself to describe a result after a run was stopped. */
const EPILOGUE_MS = 200;
/** Frames kept in a traceback (deep recursion would otherwise give thousands). */
const MAX_FRAMES = 40;

/** The error a stopped run reports (QuickJS's own uncatchable "interrupted"). */
export function stoppedError(): GuestError {
  return { name: "InternalError", message: "interrupted", traceback: "InternalError: interrupted\n" };
}

export class Reporter {
  constructor(
    private readonly guest: GuestContext,
    private readonly output: Output,
  ) {}

  /** Describe a thrown value (borrowed). */
  describe(handle: QuickJSHandle): GuestError {
    const ctx = this.guest.ctx;
    if (stopRequested()) {
      // The run was stopped; QuickJS's interrupt error needs no guest code to read.
      const name = safeString(ctx, handle, "name");
      const message = safeString(ctx, handle, "message");
      if (name === "InternalError" && message === "interrupted") return stoppedError();
    }
    const r = this.inEpilogue(() => ctx.callFunction(this.guest.hooks.describe, ctx.undefined, handle));
    if (r.error) {
      r.error.dispose();
      const name = safeString(ctx, handle, "name") ?? "Error";
      const message = safeString(ctx, handle, "message") ?? "(the thrown value could not be described)";
      return { name, message, traceback: `${name}: ${message}\n` };
    }
    using described = r.value;
    const parsed = JSON.parse(ctx.getString(described)) as [string, string, string];
    let [name, message] = parsed;
    const rawStack = parsed[2];
    if (name === "InternalError" && message === "stack overflow") {
      // QuickJS's stack limit (MAX_STACK_BYTES): reported the way other engines do.
      name = "RangeError";
      message = "Maximum call stack size exceeded";
    }
    // Frames inside the prelude (fs, console, timers) are ours, not the user's.
    const stack = rawStack
      .split("\n")
      .filter((l) => !l.includes(`(${PRELUDE_FILE}:`))
      .slice(0, MAX_FRAMES)
      .join("\n");
    const cap = (s: string, n: number) => (s.length > n ? s.slice(0, n) : s);
    return { name: cap(name, 256), message: cap(message, 60_000), traceback: cap(`${name}: ${message}\n${stack}`, 200_000) };
  }

  /** Display a result value (borrowed), cut near the output room left. */
  show(handle: QuickJSHandle): string | null {
    const ctx = this.guest.ctx;
    using room = ctx.newNumber(this.output.room + 1);
    const r = this.inEpilogue(() => ctx.callFunction(this.guest.hooks.show, ctx.undefined, handle, room));
    if (r.error) {
      r.error.dispose();
      return "[value could not be displayed]";
    }
    using shown = r.value;
    return ctx.typeof(shown) === "string" ? ctx.getString(shown) : null;
  }

  /** Call into the guest after its run, with a short deadline of its own. */
  inEpilogue<T>(fn: () => T): T {
    const stopped = stopRequested();
    if (stopped) Atomics.store(words, 0, 0);
    epilogue.untilMs = realNow() + EPILOGUE_MS;
    try {
      return fn();
    } finally {
      epilogue.untilMs = 0;
      if (stopped) Atomics.store(words, 0, 2);
    }
  }
}

/** A string property read without running guest code (own data properties only). */
function safeString(ctx: QuickJSContext, h: QuickJSHandle, key: string): string | undefined {
  if (ctx.typeof(h) !== "object") return undefined;
  try {
    using v = ctx.getProp(h, key);
    return ctx.typeof(v) === "string" ? ctx.getString(v).slice(0, 4096) : undefined;
  } catch {
    return undefined;
  }
}
