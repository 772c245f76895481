// The run's event loop: QuickJS's job queue, the prelude's timer queue on the sandbox clock
// (virtual: jumps to the due time; real: Atomics.wait in slices that watch the interrupt word) and
// the host messages that arrive while a run waits (fetch answers are delivered, anything else is
// kept for after the run). Also unwraps a cell's completion value.
import type { QuickJSContext, QuickJSHandle } from "quickjs-emscripten-core";
import type { HostMessage } from "../../protocol/messages.js";
import type { GuestContext } from "./context.js";
import type { FetchBridge } from "./fetch-bridge.js";
import type { HostInbox } from "./inbox.js";
import { stoppedError, type GuestError, type Reporter } from "./report.js";
import { clock, stopRequested, words } from "./state.js";
import type { GuestValues, HostFn } from "./values.js";

const NEVER_SETTLED: GuestError = { name: "Error", message: "top-level await never settled: the awaited promise is still pending and no timers are left", traceback: "" };

export class EventLoop {
  /** Host messages that arrived while a run waited for fetch results; handled after the run. */
  private readonly backlog: HostMessage[] = [];
  private guest: GuestContext | undefined;
  private reporter: Reporter | undefined;

  constructor(
    private readonly inbox: HostInbox,
    private readonly fetch: FetchBridge,
  ) {}

  /** Bind the loop to a new context (at configure). */
  attach(guest: GuestContext, reporter: Reporter): void {
    this.guest = guest;
    this.reporter = reporter;
  }

  /** `advanceTo(dueMs)`: the prelude's wait for its next timer; false if a host message came first. */
  hostFunctions(v: GuestValues): Record<string, HostFn> {
    const ctx = v.ctx;
    return {
      advanceTo: (due) => {
        const t = v.num(due, "time");
        if (clock.virtual) clock.virtualMs = Math.max(clock.virtualMs, Math.floor(t));
        else if (!this.sleepUntil(t)) return ctx.false; // a host message came first
        return ctx.true;
      },
    };
  }

  takeBacklog(): HostMessage[] {
    return this.backlog.splice(0);
  }

  /**
   * Run jobs and timers until `promise` (the cell's, borrowed) settles; unwraps `{ value }` and a
   * returned promise. A returned value is owned by the caller.
   */
  drive(promise: QuickJSHandle): { value?: QuickJSHandle; error?: GuestError } {
    const { ctx, rt } = this.guest!;
    let p: QuickJSHandle = promise.dup();
    let unwrapCompletion = true;
    for (;;) {
      const jobs = rt.executePendingJobs(-1);
      if (jobs.error) {
        p.dispose();
        using thrown = jobs.error;
        return { error: this.reporter!.describe(thrown) };
      }
      const state = ctx.getPromiseState(p);
      if (state.type === "pending") {
        if (stopRequested()) {
          p.dispose();
          return { error: stoppedError() };
        }
        const progress = this.step();
        if (progress === true) continue;
        p.dispose();
        return { error: progress || NEVER_SETTLED };
      }
      p.dispose();
      if (state.type === "rejected") {
        using thrown = state.error;
        return { error: this.reporter!.describe(thrown) };
      }
      let v = state.value;
      if (unwrapCompletion) {
        // The async script's promise resolves to { value: completion }.
        unwrapCompletion = false;
        const inner = ctx.getProp(v, "value");
        v.dispose();
        v = inner;
      }
      // A cell whose last expression is a promise (e.g. `main()`) gives that promise's value.
      if (ctx.typeof(v) === "object" && isPromise(ctx, v)) {
        p = v;
        continue;
      }
      if (ctx.typeof(v) === "undefined") {
        v.dispose();
        return {};
      }
      return { value: v };
    }
  }

  /** Run the jobs and timers still queued after the cell settled, as a script's would before it exits. */
  drainTimers(): GuestError | null {
    for (;;) {
      const jobs = this.guest!.rt.executePendingJobs(-1);
      if (jobs.error) {
        using thrown = jobs.error;
        return this.reporter!.describe(thrown);
      }
      if (stopRequested()) return stoppedError();
      const progress = this.step();
      if (progress === false) return null;
      if (progress !== true) return progress;
    }
  }

  /**
   * One step of a waiting run: deliver fetch answers that arrived, else run the next timer, else
   * wait for an answer. true: progress; false: nothing left to wait for; else a timer's error.
   * On the virtual clock, virtual time does not pass while a request is out: answers come first.
   */
  private step(): boolean | GuestError {
    if (this.deliverAnswers()) return true;
    if (this.fetch.inFlight > 0 && clock.virtual) return this.awaitAnswer();
    const fired = this.fireTimer();
    if (fired !== false) return fired;
    if (this.fetch.inFlight > 0) return this.awaitAnswer();
    return false;
  }

  /** Block (watching the interrupt word) until a host message arrives; true either way. */
  private awaitAnswer(): true {
    while (!stopRequested()) {
      const m = this.inbox.take(10) as HostMessage | undefined;
      if (m) {
        this.accept(m);
        return true;
      }
    }
    return true;
  }

  /** Deliver every fetch answer already queued; true if there was any message. */
  private deliverAnswers(): boolean {
    let any = false;
    for (let m = this.inbox.take(0) as HostMessage | undefined; m; m = this.inbox.take(0) as HostMessage | undefined) {
      this.accept(m);
      any = true;
    }
    return any;
  }

  private accept(m: HostMessage): void {
    if (m.type === "fetchResult") this.fetch.deliver(this.guest!, m);
    else this.backlog.push(m);
  }

  /** true: a timer ran; false: none left; else the error the timer threw. */
  private fireTimer(): boolean | GuestError {
    const { ctx, hooks } = this.guest!;
    const r = ctx.callFunction(hooks.fireTimer, ctx.undefined);
    if (r.error) {
      using thrown = r.error;
      return stopRequested() ? stoppedError() : this.reporter!.describe(thrown);
    }
    using fired = r.value;
    return ctx.dump(fired) === true;
  }

  /**
   * Block until `dueMs` (wall clock) or an interrupt. With requests out, a host message ends the
   * wait early (false): the run delivers it before the timer.
   */
  private sleepUntil(dueMs: number): boolean {
    for (;;) {
      const left = dueMs - Date.now();
      if (left <= 0 || stopRequested()) return true;
      if (this.fetch.inFlight === 0) {
        Atomics.wait(words, 0, 0, Math.min(left, 10));
        continue;
      }
      const m = this.inbox.take(Math.min(left, 10)) as HostMessage | undefined;
      if (m) {
        this.accept(m);
        return false;
      }
    }
  }
}

function isPromise(ctx: QuickJSContext, h: QuickJSHandle): boolean {
  const state = ctx.getPromiseState(h);
  // getPromiseState treats a non-promise as an already-fulfilled value (the same handle).
  if (state.type === "fulfilled" && state.notAPromise) return false;
  if (state.type === "fulfilled") state.value.dispose();
  if (state.type === "rejected") state.error.dispose();
  return true;
}
