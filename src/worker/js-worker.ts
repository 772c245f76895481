// Entry point of a JavaScript/TypeScript worker process: QuickJS compiled to WebAssembly, one
// sandbox per process. Guest code runs only inside QuickJS, never in this process's own realm (no
// eval, no Function, no vm: code generation from strings is disabled for the process anyway). The
// guest reaches the worker only through a handful of host functions taking plain values.
//
//   node [flags] js-worker.js serve <quickjsCore> <quickjsVariant> <sucrase> <acorn> [warm]
//
// Protocol: frames (see protocol/frames.ts) on stdin/stdout; the control pipe (fd 3) carries
// interrupt requests; stderr is for diagnostics only. The main thread only relays frames from the
// host: QuickJS runs on an engine thread with a large native stack (see ENGINE_STACK_MB), which
// writes its frames to stdout itself.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { isMainThread, MessageChannel, receiveMessageOnPort, Worker, workerData, type MessagePort } from "node:worker_threads";
import type { QuickJSContext, QuickJSHandle, QuickJSRuntime, QuickJSWASMModule } from "quickjs-emscripten-core";
import type { transform as SucraseTransform } from "sucrase";
import { PROTOCOL_VERSION } from "../protocol/frames.js";
import { FETCH_LIMITS } from "../protocol/caps.js";
import type { FsOp, HostMessage, WorkerLimits } from "../protocol/messages.js";
import { MountedTree } from "../vfs/mounted.js";
import { MemTree, VfsError } from "../vfs/tree.js";
import { beginRun, cutUtf8, fatal, INTERRUPT_WORDS, OutputBatcher, readHostFrames, REASON_OUTPUT, realNow, seededRng, send, setMuted, settle, startInterrupter, VIRTUAL_EPOCH_MS, VIRTUAL_TICK_MS } from "./common.js";
import { CellSyntaxError, rewriteCell, type Parse } from "./js-cell.js";
import { PRELUDE } from "./js-guest.js";

const HOME = "/home/user";
/** QuickJS's C stack budget: larger values let deep recursion overflow the worker's own stack. */
const MAX_STACK_BYTES = 256 * 1024;
/** QuickJS's JS_EVAL_FLAG_ASYNC: a global script with top-level await; evaluates to a promise. */
const EVAL_FLAG_ASYNC = 1 << 7;
/** Time the worker gives itself to describe a result after a run was stopped. */
const EPILOGUE_MS = 200;
const REASON_TIMEOUT = 1;
const WARM_ROUNDS = 30;
/** Frames kept in a traceback (deep recursion would otherwise give thousands). */
const MAX_FRAMES = 40;

const words = new Int32Array(new SharedArrayBuffer(4 * INTERRUPT_WORDS)); // see beginRun

const clock = { virtual: false, virtualMs: VIRTUAL_EPOCH_MS };
/** The guest's Wasm memory cap (limits.memoryMb), enforced where Emscripten grows the memory. */
const memCap = { bytes: 256 * 1024 * 1024, hit: false };
const WASM_PAGE = 65536;

/** The slice of the WebAssembly JS API used here (the project's TS lib has no DOM types). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
declare const WebAssembly: {
  Memory: new (d: { initial: number; maximum: number }) => WasmMemory;
  compile(bytes: Uint8Array): Promise<object>;
};

/**
 * A Wasm memory whose growth stops at `memCap`. QuickJS's own malloc limit undercounts in this
 * build (no malloc_usable_size), so the cap is on the memory itself: Emscripten's heap growth calls
 * `grow` and treats a throw as "no memory", so QuickJS raises its out-of-memory error.
 */
function cappedMemory(): WasmMemory {
  const mem = new WebAssembly.Memory({ initial: 256, maximum: 32768 });
  const grow = mem.grow.bind(mem);
  Object.defineProperty(mem, "grow", {
    value: (pages: number) => {
      if (mem.buffer.byteLength + pages * WASM_PAGE > memCap.bytes) {
        memCap.hit = true;
        throw new RangeError("memory cap reached");
      }
      return grow(pages);
    },
  });
  return mem;
}
function virtualNow(): number {
  clock.virtualMs += VIRTUAL_TICK_MS;
  return clock.virtualMs;
}

type GuestError = { name: string; message: string; traceback: string };

// ---------------------------------------------------------------------------------------------
// Output with the limit enforced at the source; batched into frames.

/** QuickJS hands output over as text: cut at the cap without splitting a character. */
class Output extends OutputBatcher {
  write(stream: "stdout" | "stderr", text: string): void {
    if (!this.open) return;
    const n = Buffer.byteLength(text);
    const fit = this.admit(n);
    this.push(stream, fit < n ? cutUtf8(text, fit) : text);
  }
}


// ---------------------------------------------------------------------------------------------

type Transform = typeof SucraseTransform;

/** Messages from the host as the engine thread sees them: by event when idle, on demand in a run. */
class HostInbox {
  constructor(
    readonly port: MessagePort,
    private readonly wake: Int32Array,
  ) {}

  /** The next queued message, waiting up to `waitMs` for one (0: do not wait). */
  take(waitMs: number): unknown {
    const seen = Atomics.load(this.wake, 0);
    const m = receiveMessageOnPort(this.port);
    if (m || waitMs <= 0) return m?.message;
    Atomics.wait(this.wake, 0, seen, waitMs);
    return receiveMessageOnPort(this.port)?.message;
  }
}

interface Hooks {
  show: QuickJSHandle;
  describe: QuickJSHandle;
  fireTimer: QuickJSHandle;
  clearTimers: QuickJSHandle;
  fetchDone: QuickJSHandle;
  moduleSource: QuickJSHandle;
}


class JsSession {
  private readonly output = new Output(words);
  private tree = emptyTree();
  private limits: WorkerLimits = { memoryBytes: 256 * 1024 * 1024, outputBytes: 1 << 20, vfsBytes: 0, vfsFiles: 0 };
  private rng: (view: Uint8Array) => void = seededRng(0);
  private rt: QuickJSRuntime | undefined;
  private ctx: QuickJSContext | undefined;
  private hooks: Hooks | undefined;
  private configured = false;
  private typescript = false;
  /** The network grant's worker-side part (present: the guest has `fetch`). */
  private network: { maxRequestBytes: number } | undefined;
  private fetchSeq = 0;
  /** Requests of the run in progress still waiting for the host's answer. */
  private readonly fetches = new Set<number>();
  /** Host messages that arrived while a run waited for fetch results; handled after the run. */
  private readonly backlog: HostMessage[] = [];
  private cell = 0;
  /** After a run was stopped, the worker still calls into the guest (describe, show) until this. */
  private epilogueUntil = 0;

  constructor(
    private readonly qjs: QuickJSWASMModule,
    private readonly loadSucrase: () => Transform,
    private readonly parse: Parse,
    private readonly inbox: HostInbox,
  ) {}

  async start(interrupter: Promise<void>, warm: boolean): Promise<void> {
    await interrupter;
    if (warm) {
      this.warmUp();
      await settle();
    }
    send({ type: "ready", v: PROTOCOL_VERSION, engine: "quickjs (quickjs-emscripten 0.32)" });
  }

  /** Exercise the first-request paths (context, prelude, run, output, fs, TypeScript) while idle. */
  private warmUp(): void {
    setMuted(true);
    const msg: Extract<HostMessage, { type: "configure" }> = { type: "configure", id: 1, seed: 0, clock: "real", env: {}, limits: this.limits, mounts: [], language: "typescript" };
    for (let i = 0; i < WARM_ROUNDS; i++) {
      this.configure({ ...msg, limits: { ...this.limits, vfsBytes: 1 << 20, vfsFiles: 100 } }, true);
      this.handle({ type: "run", id: 1, code: "const x: number = 1;\nconsole.log('warm', [x], Math.random());\nx + 1" });
      this.handle({ type: "run", id: 1, code: "import fs from 'fs';\nfs.writeFileSync('/tmp/w', 'w');\nawait Promise.resolve(fs.readdirSync('/tmp'))" });
      this.handle({ type: "run", id: 1, code: "function f(): never { throw new Error('warm') }\nf()" });
      this.handle({ type: "fs", id: 1, op: "write", path: "/tmp/.warm", data: "d2FybQ==" });
      this.handle({ type: "fs", id: 1, op: "read", path: "/tmp/.warm" });
      this.handle({ type: "fs", id: 1, op: "list", path: "/tmp" });
      this.handle({ type: "fs", id: 1, op: "remove", path: "/tmp/.warm" });
    }
    this.dropContext();
    this.tree = emptyTree();
    this.configured = false;
    this.cell = 0;
    setMuted(false);
  }

  handle(msg: HostMessage): void {
    if (msg.type === "fetchResult") return; // for a run that has ended
    if (msg.type === "configure") return this.configure(msg);
    if (!this.configured) return fatal("first message must be configure");
    if (msg.type === "run") return this.run(msg.id, msg.code);
    if (msg.type === "fs") return this.fsOp(msg.id, msg.op, msg.path, msg.data, msg.recursive);
  }

  private configure(msg: Extract<HostMessage, { type: "configure" }>, warming = false): void {
    if (this.configured && !warming) return fatal("configure sent twice");
    this.dropContext();
    this.limits = msg.limits;
    memCap.bytes = msg.limits.memoryBytes;
    this.typescript = msg.language === "typescript";
    this.network = msg.network;
    this.rng = seededRng(msg.seed);
    clock.virtual = msg.clock === "virtual";
    clock.virtualMs = VIRTUAL_EPOCH_MS;
    if (clock.virtual) Date.now = virtualNow; // QuickJS's Date reads the clock through Date.now
    // Mount points are made before quotas apply (free, like /tmp and the home directory).
    const tree = new MemTree({ vfsBytes: msg.limits.vfsBytes, vfsFiles: msg.limits.vfsFiles }, ["/tmp", HOME, ...msg.mounts.map((m) => m.guestPath)], HOME);
    try {
      this.tree = new MountedTree(tree, msg.mounts, msg.limits.memoryBytes);
    } catch (e) {
      return send({ type: "reply", id: msg.id, ok: false, errno: "ENOENT", message: `a mount's host directory cannot be opened: ${(e as Error).message}` });
    }
    if (this.typescript) this.loadSucrase();
    this.makeContext();
    this.configured = true;
    send({ type: "reply", id: msg.id, ok: true });
  }

  private makeContext(): void {
    const rt = this.qjs.newRuntime();
    rt.setMemoryLimit(this.limits.memoryBytes);
    rt.setMaxStackSize(MAX_STACK_BYTES);
    rt.setInterruptHandler(() => Atomics.load(words, 0) !== 0 || (this.epilogueUntil > 0 && realNow() > this.epilogueUntil));
    const ctx = rt.newContext();
    this.rt = rt;
    this.ctx = ctx;
    const host = this.hostFunctions(ctx);
    const fn = ctx.unwrapResult(ctx.evalCode(PRELUDE, "<agentbox>", { type: "global", strict: true }));
    const hooks = ctx.unwrapResult(ctx.callFunction(fn, ctx.undefined, host));
    fn.dispose();
    host.dispose();
    this.hooks = {
      show: ctx.getProp(hooks, "show"),
      describe: ctx.getProp(hooks, "describe"),
      fireTimer: ctx.getProp(hooks, "fireTimer"),
      clearTimers: ctx.getProp(hooks, "clearTimers"),
      fetchDone: ctx.getProp(hooks, "fetchDone"),
      moduleSource: ctx.getProp(hooks, "moduleSource"),
    };
    hooks.dispose();
    // `import` (static ones are rewritten into dynamic ones) reaches only the prelude's built-in
    // modules; "node:fs" and "fs" are one module.
    rt.setModuleLoader(
      (name) => {
        const nameHandle = ctx.newString(name);
        const r = ctx.callFunction(this.hooks!.moduleSource, ctx.undefined, nameHandle);
        nameHandle.dispose();
        if (r.error) return { error: r.error };
        const source = ctx.typeof(r.value) === "string" ? ctx.getString(r.value) : "";
        r.value.dispose();
        return source;
      },
      (_base, requested) => requested.replace(/^node:/, ""),
    );
  }

  private dropContext(): void {
    if (this.hooks) for (const h of Object.values(this.hooks)) h.dispose();
    this.hooks = undefined;
    this.ctx?.dispose();
    this.rt?.dispose();
    this.ctx = undefined;
    this.rt = undefined;
  }

  /** The object of host functions the prelude keeps in its closure. Every argument is checked. */
  private hostFunctions(ctx: QuickJSContext): QuickJSHandle {
    const host = ctx.newObject();
    const str = (h: QuickJSHandle | undefined, what: string): string => {
      if (!h || ctx.typeof(h) !== "string") throw ctx.newError({ name: "TypeError", message: `${what} must be a string` });
      return ctx.getString(h);
    };
    const num = (h: QuickJSHandle | undefined, what: string): number => {
      if (!h || ctx.typeof(h) !== "number") throw ctx.newError({ name: "TypeError", message: `${what} must be a number` });
      return ctx.getNumber(h);
    };
    const bytes = (h: QuickJSHandle | undefined): Uint8Array => {
      if (h && ctx.typeof(h) === "string") return Buffer.from(ctx.getString(h), "utf8");
      if (!h || ctx.typeof(h) !== "object") throw ctx.newError({ name: "TypeError", message: "data must be a string or an ArrayBuffer" });
      const lt = ctx.getArrayBuffer(h);
      try {
        return new Uint8Array(lt.value); // a copy out of the guest's memory
      } finally {
        lt.dispose();
      }
    };
    const arrayBuffer = (b: Uint8Array) => ctx.newArrayBuffer(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
    const fns: Record<string, (...a: QuickJSHandle[]) => QuickJSHandle | void> = {
      write: (stream, text) => {
        this.output.write(num(stream, "stream") === 1 ? "stderr" : "stdout", str(text, "text"));
      },
      outputRoom: () => ctx.newNumber(this.output.room),
      random: () => {
        const b = new Uint8Array(8);
        this.rng(b);
        const v = new DataView(b.buffer);
        return ctx.newNumber((v.getUint32(0) * 2 ** 21 + (v.getUint32(4) >>> 11)) / 2 ** 53);
      },
      randomBytes: (n) => {
        const len = num(n, "length");
        if (!Number.isInteger(len) || len < 0 || len > 65536) throw ctx.newError({ name: "RangeError", message: "randomBytes: 0..65536 bytes" });
        const b = new Uint8Array(len);
        this.rng(b);
        return arrayBuffer(b);
      },
      encode: (s) => arrayBuffer(Buffer.from(str(s, "text"), "utf8")),
      decode: (b) => ctx.newString(Buffer.from(bytes(b)).toString("utf8")),
      advanceTo: (due) => {
        const t = num(due, "time");
        if (clock.virtual) clock.virtualMs = Math.max(clock.virtualMs, Math.floor(t));
        else if (!this.sleepUntil(t)) return ctx.false; // a host message came first
        return ctx.true;
      },
      fs: (op, p, a, b) => this.guestFs(ctx, str(op, "op"), str(p, "path"), a, b, bytes),
    };
    if (this.network) {
      const cap = this.network.maxRequestBytes;
      fns.fetch = (url, method, headers, body) => {
        const u = str(url, "url");
        const m = str(method, "method");
        const h = JSON.parse(str(headers, "headers")) as unknown;
        const data = body && ctx.typeof(body) !== "undefined" ? bytes(body) : undefined;
        const fail = (name: string, message: string) => ctx.newError({ name, message: `fetch: ${message}` });
        if (u.length > FETCH_LIMITS.urlChars) throw fail("TypeError", `URL longer than ${FETCH_LIMITS.urlChars} characters`);
        if (!/^[A-Z]{1,16}$/.test(m)) throw fail("TypeError", `invalid method ${JSON.stringify(m.slice(0, 32))}`);
        const pairs = Array.isArray(h) ? h : [];
        if (pairs.length > FETCH_LIMITS.headers) throw fail("TypeError", `more than ${FETCH_LIMITS.headers} headers`);
        for (const pair of pairs) {
          const ok = Array.isArray(pair) && pair.length === 2 && typeof pair[0] === "string" && typeof pair[1] === "string";
          if (!ok || pair[0].length > FETCH_LIMITS.headerNameChars || pair[1].length > FETCH_LIMITS.headerValueChars) throw fail("TypeError", "invalid or oversized header");
        }
        if (data && data.length > cap) throw fail("RangeError", `the request body of ${data.length} bytes is larger than network.maxRequestBytes (${cap})`);
        if (this.fetches.size >= FETCH_LIMITS.inFlight) throw fail("RangeError", `more than ${FETCH_LIMITS.inFlight} requests in flight`);
        const req = ++this.fetchSeq;
        this.fetches.add(req);
        send({ type: "fetch", id: Atomics.load(words, 2), req, url: u, method: m, headers: pairs as [string, string][], ...(data ? { body: Buffer.from(data).toString("base64") } : {}) });
        return ctx.newNumber(req);
      };
    }
    for (const [name, f] of Object.entries(fns)) {
      const h = ctx.newFunction(name, f);
      ctx.setProp(host, name, h);
      h.dispose();
    }
    return host;
  }

  private guestFs(ctx: QuickJSContext, op: string, p: string, a: QuickJSHandle | undefined, b: QuickJSHandle | undefined, bytes: (h: QuickJSHandle | undefined) => Uint8Array): QuickJSHandle | void {
    const t = this.tree;
    try {
      switch (op) {
        case "read": {
          const d = t.readFile(p);
          return ctx.newArrayBuffer(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength) as ArrayBuffer);
        }
        case "readText":
          return ctx.newString(Buffer.from(t.readFile(p)).toString("utf8"));
        case "write":
        case "append":
          return t.writeFile(p, bytes(a), { append: op === "append" });
        case "list":
          return ctx.newString(JSON.stringify(t.list(p)));
        case "stat":
          return ctx.newString(JSON.stringify(t.stat(p)));
        case "exists":
          return t.exists(p) ? ctx.true : ctx.false;
        case "mkdir":
          return t.mkdir(p, Boolean(a && ctx.dump(a) === true));
        case "rm":
          return t.remove(p, Boolean(a && ctx.dump(a) === true));
        case "rmdir":
          return t.rmdir(p);
        case "unlink":
          return t.unlink(p);
        case "rename": {
          if ((!b || ctx.typeof(b) === "undefined") && a && ctx.typeof(a) === "string") return t.rename(p, ctx.getString(a));
          throw new VfsError("EINVAL", p);
        }
        default:
          throw new VfsError("EINVAL", p);
      }
    } catch (e) {
      if (e instanceof VfsError) throw ctx.newError({ name: "Error", message: `${e.code}: ${e.description}, '${p}'` });
      throw e;
    }
  }

  private run(id: number, code: string): void {
    const t0 = realNow();
    const ctx = this.ctx!;
    const rt = this.rt!;
    beginRun(words, id);
    this.epilogueUntil = 0;
    this.tree.takeLimitHit();
    memCap.hit = false;
    this.output.start(id, this.limits.outputBytes);
    const file = `cell-${++this.cell}.${this.typescript ? "ts" : "js"}`;
    let value: string | null = null;
    let error: GuestError | null = null;
    let source: string | undefined;
    try {
      source = rewriteCell(this.typescript ? this.stripTypes(code) : code, this.parse);
    } catch (e) {
      if (!(e instanceof CellSyntaxError)) throw e;
      error = { name: "SyntaxError", message: `${e.message} (line ${e.line}, column ${e.column})`, traceback: `SyntaxError: ${e.message}\n    at ${file}:${e.line}:${e.column}\n` };
    }
    if (source !== undefined) {
      const r = ctx.evalCode(source, file, EVAL_FLAG_ASYNC);
      if (r.error) {
        error = this.describe(r.error);
        r.error.dispose();
      } else {
        const settled = this.drive(r.value);
        r.value.dispose();
        if (settled.error) error = settled.error;
        else if (settled.value) {
          value = this.show(settled.value);
          settled.value.dispose();
        }
        // Timers still queued run now, as a script's would before it exits.
        if (!error) error = this.drainTimers();
        if (error) value = null;
      }
    }
    const reason = Atomics.load(words, 1);
    const interrupted = Atomics.load(words, 0) !== 0;
    if (interrupted) {
      // A stopped run's timers die with it: a runaway interval must not resume in the next run.
      this.inEpilogue(() => ctx.callFunction(this.hooks!.clearTimers, ctx.undefined)).dispose();
    }
    // Requests still unanswered belong to this run: their answers will be dropped.
    this.fetches.clear();
    Atomics.store(words, 2, 0);
    Atomics.store(words, 0, 0);
    this.epilogueUntil = 0;
    rt.executePendingJobs(0);
    if (value !== null) {
      const room = Math.max(0, this.limits.outputBytes - this.output.bytes);
      if (Buffer.byteLength(value) > room) {
        value = cutUtf8(value, room);
        this.output.hit = true;
      }
    }
    this.output.end();
    const vfsHit = this.tree.takeLimitHit();
    const memHit = memCap.hit || (error !== null && error.name === "InternalError" && /out of memory/.test(error.message));
    const limitHit =
      this.output.hit || reason === REASON_OUTPUT ? "outputBytes"
      : interrupted && reason === REASON_TIMEOUT ? "timeoutMs"
      : memHit ? "memoryMb"
      : vfsHit ?? null;
    send({ type: "result", id, value, error, limitHit, durationMs: realNow() - t0, vfsDigest: this.tree.digest() });
    if (this.backlog.length > 0) {
      const later = this.backlog.splice(0);
      setImmediate(() => {
        for (const m of later) this.handle(m);
      });
    }
  }

  /** Run jobs and timers until `promise` (the cell's) settles; unwraps `{ value }` and a returned promise. */
  private drive(promise: QuickJSHandle): { value?: QuickJSHandle; error?: GuestError } {
    const ctx = this.ctx!;
    let p: QuickJSHandle = promise.dup();
    let unwrapCompletion = true;
    for (;;) {
      const jobs = this.rt!.executePendingJobs(-1);
      if (jobs.error) {
        p.dispose();
        const err = this.describe(jobs.error);
        jobs.error.dispose();
        return { error: err };
      }
      const state = ctx.getPromiseState(p);
      if (state.type === "pending") {
        if (Atomics.load(words, 0) !== 0) {
          p.dispose();
          return { error: this.stopped() };
        }
        const progress = this.step();
        if (progress === true) continue;
        p.dispose();
        if (progress) return { error: progress };
        return { error: { name: "Error", message: "top-level await never settled: the awaited promise is still pending and no timers are left", traceback: "" } };
      }
      p.dispose();
      if (state.type === "rejected") {
        const err = this.describe(state.error);
        state.error.dispose();
        return { error: err };
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

  /**
   * One step of a waiting run: deliver fetch answers that arrived, else run the next timer, else
   * wait for an answer. true: progress; false: nothing left to wait for; else a timer's error.
   * On the virtual clock, virtual time does not pass while a request is out: answers come first.
   */
  private step(): boolean | GuestError {
    if (this.deliverAnswers()) return true;
    if (this.fetches.size > 0 && clock.virtual) return this.awaitAnswer();
    const fired = this.fireTimer();
    if (fired !== false) return fired;
    if (this.fetches.size > 0) return this.awaitAnswer();
    return false;
  }

  /** Block (watching the interrupt word) until a host message arrives; true either way. */
  private awaitAnswer(): true {
    while (Atomics.load(words, 0) === 0) {
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
    if (m.type !== "fetchResult") {
      this.backlog.push(m);
      return;
    }
    if (!this.fetches.delete(m.req)) return; // stale
    const ctx = this.ctx!;
    const meta = ctx.newString(JSON.stringify(m.ok ? { status: m.status, statusText: m.statusText, url: m.url, redirected: m.redirected, headers: m.headers } : { error: m.error }));
    let body: QuickJSHandle = ctx.undefined;
    if (m.ok) {
      try {
        const b = Buffer.from(m.body, "base64");
        body = ctx.newArrayBuffer(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
      } catch {
        meta.dispose();
        const err = ctx.newString(JSON.stringify({ error: { name: "RangeError", message: "fetch: the response body does not fit in the sandbox's memory (limits.memoryMb)" } }));
        return this.callFetchDone(m.req, err, ctx.undefined);
      }
    }
    this.callFetchDone(m.req, meta, body);
  }

  private callFetchDone(req: number, meta: QuickJSHandle, body: QuickJSHandle): void {
    const ctx = this.ctx!;
    const n = ctx.newNumber(req);
    const r = ctx.callFunction(this.hooks!.fetchDone, ctx.undefined, n, meta, body);
    for (const h of [n, meta, body]) if (h.alive && h !== ctx.undefined) h.dispose();
    if (r.error) r.error.dispose();
    else r.value.dispose();
  }

  /** true: a timer ran; false: none left; else the error the timer threw. */
  private fireTimer(): boolean | GuestError {
    const ctx = this.ctx!;
    const r = ctx.callFunction(this.hooks!.fireTimer, ctx.undefined);
    if (r.error) {
      const err = Atomics.load(words, 0) !== 0 ? this.stopped() : this.describe(r.error);
      r.error.dispose();
      return err;
    }
    const fired = ctx.dump(r.value) === true;
    r.value.dispose();
    return fired;
  }

  private drainTimers(): GuestError | null {
    for (;;) {
      const jobs = this.rt!.executePendingJobs(-1);
      if (jobs.error) {
        const err = this.describe(jobs.error);
        jobs.error.dispose();
        return err;
      }
      if (Atomics.load(words, 0) !== 0) return this.stopped();
      const progress = this.step();
      if (progress === false) return null;
      if (progress !== true) return progress;
    }
  }

  /** The error a stopped run reports (QuickJS's own uncatchable "interrupted"). */
  private stopped(): GuestError {
    return { name: "InternalError", message: "interrupted", traceback: "InternalError: interrupted\n" };
  }

  private describe(handle: QuickJSHandle): GuestError {
    const ctx = this.ctx!;
    if (Atomics.load(words, 0) !== 0) {
      // The run was stopped; QuickJS's interrupt error needs no guest code to read.
      const name = safeString(ctx, handle, "name");
      const message = safeString(ctx, handle, "message");
      if (name === "InternalError" && message === "interrupted") return this.stopped();
    }
    const r = this.inEpilogue(() => ctx.callFunction(this.hooks!.describe, ctx.undefined, handle));
    if (r.error) {
      r.error.dispose();
      const name = safeString(ctx, handle, "name") ?? "Error";
      const message = safeString(ctx, handle, "message") ?? "(the thrown value could not be described)";
      return { name, message, traceback: `${name}: ${message}\n` };
    }
    const parsed = JSON.parse(ctx.getString(r.value)) as [string, string, string];
    let [name, message] = parsed;
    const rawStack = parsed[2];
    r.value.dispose();
    if (name === "InternalError" && message === "stack overflow") {
      // QuickJS's stack limit (MAX_STACK_BYTES): reported the way other engines do.
      name = "RangeError";
      message = "Maximum call stack size exceeded";
    }
    // Frames inside the prelude (fs, console, timers) are ours, not the user's.
    const stack = rawStack
      .split("\n")
      .filter((l) => !l.includes("(<agentbox>:"))
      .slice(0, MAX_FRAMES)
      .join("\n");
    const cap = (s: string, n: number) => (s.length > n ? s.slice(0, n) : s);
    return { name: cap(name, 256), message: cap(message, 60_000), traceback: cap(`${name}: ${message}\n${stack}`, 200_000) };
  }

  private show(handle: QuickJSHandle): string | null {
    const ctx = this.ctx!;
    const room = ctx.newNumber(this.output.room + 1);
    const r = this.inEpilogue(() => ctx.callFunction(this.hooks!.show, ctx.undefined, handle, room));
    room.dispose();
    if (r.error) {
      r.error.dispose();
      return "[value could not be displayed]";
    }
    const s = ctx.typeof(r.value) === "string" ? ctx.getString(r.value) : null;
    r.value.dispose();
    return s;
  }

  /** Call into the guest after its run, with a short deadline of its own. */
  private inEpilogue<T>(fn: () => T): T {
    const stopped = Atomics.load(words, 0) !== 0;
    if (stopped) Atomics.store(words, 0, 0);
    this.epilogueUntil = realNow() + EPILOGUE_MS;
    try {
      return fn();
    } finally {
      this.epilogueUntil = 0;
      if (stopped) Atomics.store(words, 0, 2);
    }
  }

  /**
   * Block until `dueMs` (wall clock) or an interrupt. With requests out, a host message ends the
   * wait early (false): the run delivers it before the timer.
   */
  private sleepUntil(dueMs: number): boolean {
    for (;;) {
      const left = dueMs - Date.now();
      if (left <= 0 || Atomics.load(words, 0) !== 0) return true;
      if (this.fetches.size === 0) {
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

  private stripTypes(code: string): string {
    try {
      return this.loadSucrase()(code, { transforms: ["typescript"], disableESTransforms: true, keepUnusedImports: false }).code;
    } catch (e) {
      const err = e as Error & { loc?: { line: number; column: number } };
      if (!err.loc) throw new CellSyntaxError(err.message, 1, 1);
      // Sucrase's columns are 1-based already; its message ends in "(line:column)".
      throw new CellSyntaxError(err.message.replace(/ \(\d+:\d+\)$/, ""), err.loc.line, err.loc.column);
    }
  }

  private fsOp(id: number, op: FsOp, p: string, data: string | undefined, recursive: boolean | undefined): void {
    const t = this.tree;
    try {
      if (!p.startsWith("/")) throw new VfsError("EINVAL", p);
      switch (op) {
        case "write":
          t.writeFile(p, Buffer.from(data ?? "", "base64"), { parents: true });
          return send({ type: "reply", id, ok: true });
        case "read":
          return send({ type: "reply", id, ok: true, data: Buffer.from(t.readFile(p)).toString("base64") });
        case "exists":
          return send({ type: "reply", id, ok: true, exists: t.exists(p) });
        case "mkdir":
          t.mkdir(p, true);
          return send({ type: "reply", id, ok: true });
        case "list":
          return send({ type: "reply", id, ok: true, entries: t.list(p) });
        case "remove":
          t.remove(p, recursive ?? true);
          return send({ type: "reply", id, ok: true });
      }
    } catch (e) {
      if (!(e instanceof VfsError)) return fatal(`file operation failed: ${String((e as Error)?.stack ?? e)}`);
      send({ type: "reply", id, ok: false, errno: e.code, message: e.description, ...(e.limit ? { limit: e.limit } : {}) });
    }
  }
}

function emptyTree(): MountedTree {
  return new MountedTree(new MemTree({ vfsBytes: Infinity, vfsFiles: Infinity }, ["/tmp", HOME], HOME), [], Infinity);
}

function isPromise(ctx: QuickJSContext, h: QuickJSHandle): boolean {
  const state = ctx.getPromiseState(h);
  // getPromiseState treats a non-promise as an already-fulfilled value (the same handle).
  if (state.type === "fulfilled" && state.notAPromise) return false;
  if (state.type === "fulfilled") state.value.dispose();
  if (state.type === "rejected") state.error.dispose();
  return true;
}

/** A string property read without running guest code (own data properties only). */
function safeString(ctx: QuickJSContext, h: QuickJSHandle, key: string): string | undefined {
  if (ctx.typeof(h) !== "object") return undefined;
  try {
    const v = ctx.getProp(h, key);
    const s = ctx.typeof(v) === "string" ? ctx.getString(v).slice(0, 4096) : undefined;
    v.dispose();
    return s;
  } catch {
    return undefined;
  }
}


// ---------------------------------------------------------------------------------------------

/**
 * Native stack of the engine thread. QuickJS's own stack check (MAX_STACK_BYTES) measures the
 * Emscripten stack in Wasm memory, but the Wasm frames of QuickJS's C code run on this thread's
 * native stack, which recursive C paths (JSON, Array join, the parser) use 16-32 times faster: with
 * Node's ~1 MB main-thread stack a 1,000-deep `[[[…]]]` in eval or String() overflowed it first
 * (measured: QuickJS's check wins in every path from 8 MB up; 64 MB leaves a wide margin). A
 * thread's stack size can be set (`resourceLimits.stackSizeMb` sizes both the thread and V8's
 * limit); the main thread's cannot. Only touched pages cost memory.
 */
const ENGINE_STACK_MB = 64;

/**
 * The main thread: reads frames from the host and hands them to the engine thread through a
 * message port, bumping `wake` so the engine thread can also wait for them synchronously while it
 * is inside a run. Exits with the engine thread.
 */
function shell(): void {
  const wake = new Int32Array(new SharedArrayBuffer(4));
  const { port1, port2 } = new MessageChannel();
  const engine = new Worker(new URL(import.meta.url), {
    argv: process.argv.slice(2),
    workerData: { port: port2, wake: wake.buffer },
    transferList: [port2],
    resourceLimits: { stackSizeMb: ENGINE_STACK_MB },
  });
  engine.on("error", (e) => fatal(`engine thread failed: ${String(e?.stack ?? e)}`));
  engine.on("exit", (code) => process.exit(code));
  readHostFrames((msgs) => {
    for (const m of msgs) port1.postMessage(m);
    Atomics.add(wake, 0, 1);
    Atomics.notify(wake, 0);
  });
}

/** A V8 stack overflow that escaped from inside QuickJS's Wasm code (not a guest exception). */
function isNativeStackOverflow(e: unknown): boolean {
  return e instanceof RangeError && /Maximum call stack size exceeded/.test(e.message) && /wasm-function/.test(e.stack ?? "");
}

async function engineMain(): Promise<void> {
  const [mode, coreEntry, variantEntry, sucraseEntry, acornEntry, flag] = process.argv.slice(2);
  if (mode !== "serve" || !coreEntry || !variantEntry || !sucraseEntry || !acornEntry) fatal("usage: js-worker.js serve <quickjsCore> <quickjsVariant> <sucrase> <acorn> [warm]");
  const { port, wake } = workerData as { port: MessagePort; wake: SharedArrayBuffer };
  const interrupter = startInterrupter(words);
  const core = (await import(pathToFileURL(coreEntry).href)) as typeof import("quickjs-emscripten-core");
  type SyncVariant = Parameters<typeof core.newVariant>[0] & Parameters<typeof core.newQuickJSWASMModuleFromVariant>[0];
  const variant = ((await import(pathToFileURL(variantEntry).href)) as { default: SyncVariant }).default;
  const wasmModule = await WebAssembly.compile(await fs.promises.readFile(path.join(path.dirname(variantEntry), "emscripten-module.wasm")));
  const qjs = await core.newQuickJSWASMModuleFromVariant(core.newVariant(variant, { wasmModule: wasmModule as never, wasmMemory: cappedMemory() as never }));
  let transform: Transform | undefined;
  const loadSucrase = () => (transform ??= (createRequire(import.meta.url)(sucraseEntry) as { transform: Transform }).transform);
  const { parse } = createRequire(import.meta.url)(acornEntry) as { parse: Parse };
  const session = new JsSession(qjs, loadSucrase, parse, new HostInbox(port, new Int32Array(wake)));
  await session.start(interrupter, flag === "warm");
  port.on("message", (m: unknown) => {
    try {
      session.handle(m as HostMessage);
    } catch (e) {
      if (isNativeStackOverflow(e)) {
        // Unwinding through Wasm skipped QuickJS's own clean-up: its heap and stack pointer can no
        // longer be trusted, so the sandbox ends here rather than run on a broken engine.
        fatal("the guest's code or data nested deeper than the engine's native stack allows; the engine's state is lost and the sandbox was closed");
      }
      fatal(`request failed: ${String((e as Error)?.stack ?? e)}`);
    }
  });
}

if (isMainThread) shell();
else engineMain().catch((e: unknown) => fatal(`worker failed to start: ${String((e as Error)?.stack ?? e)}`));
