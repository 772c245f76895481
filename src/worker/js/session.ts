// One sandbox in a JavaScript worker: dispatches the host's messages (configure, run, fs) to the
// concerns that handle them, builds a fresh QuickJS context per configure, and warms a pooled
// worker's first-request paths before it reports ready. Owns the context and frees it.
import type { QuickJSWASMModule } from "quickjs-emscripten-core";
import { PROTOCOL_VERSION } from "../../protocol/frames.js";
import type { HostMessage, WorkerLimits } from "../../protocol/messages.js";
import { fatal, send as sendFrame, seededRng, setMuted, settle, VIRTUAL_EPOCH_MS } from "../common.js";
import type { Parse } from "../js-cell.js";
import { basicHostFunctions } from "./basics.js";
import { CellRunner, type Transform } from "./cell-runner.js";
import { GuestContext } from "./context.js";
import { EventLoop } from "./event-loop.js";
import { FetchBridge } from "./fetch-bridge.js";
import { FsBridge } from "./fs-bridge.js";
import type { HostInbox } from "./inbox.js";
import { Output } from "./output.js";
import { Reporter } from "./report.js";
import { clock, memCap, virtualNow, words } from "./state.js";

const WARM_ROUNDS = 30;

type Configure = Extract<HostMessage, { type: "configure" }>;

export interface SessionDeps {
  qjs: QuickJSWASMModule;
  loadSucrase: () => Transform;
  parse: Parse;
  inbox: HostInbox;
  /** Where frames go (the host's stdout in a worker; tests pass their own). */
  send?: (message: unknown) => void;
}

export class JsSession implements Disposable {
  private readonly output = new Output(words, (m) => this.send(m));
  private readonly send: (message: unknown) => void;
  private readonly fs: FsBridge;
  private readonly fetch: FetchBridge;
  private readonly loop: EventLoop;
  private limits: WorkerLimits = { memoryBytes: 256 * 1024 * 1024, outputBytes: 1 << 20, vfsBytes: 0, vfsFiles: 0 };
  private guest: GuestContext | undefined;
  /** The sandbox's seeded entropy (Math.random, crypto); replaced by configure and reseed. */
  private rng: (view: Uint8Array) => void = seededRng(0);
  /** Through `this`: a reseed (a fork given its own seed) swaps the stream under the guest's functions. */
  private readonly guestRng = (view: Uint8Array) => this.rng(view);
  /**
   * A pooled worker's context, built while it waits (after warm-up): runtime, context, host
   * functions and prelude, which are the same for every sandbox without a network grant and
   * touch neither the clock nor the entropy stream. The first configure adopts it (setting its
   * memory limit) instead of building one on the request path; any other configure frees it.
   */
  private spare: GuestContext | undefined;
  /** The virtual clock once the spare was built (see spareContext). */
  private spareClockMs = VIRTUAL_EPOCH_MS;
  private runner: CellRunner | undefined;

  constructor(private readonly deps: SessionDeps) {
    this.send = deps.send ?? sendFrame;
    this.fs = new FsBridge(this.send);
    this.fetch = new FetchBridge(this.send);
    this.loop = new EventLoop(deps.inbox, this.fetch);
  }

  /** The QuickJS context of the configured sandbox (for tests that inspect the runtime). */
  get context(): GuestContext | undefined {
    return this.guest;
  }

  async start(interrupter: Promise<void>, warm: boolean): Promise<void> {
    await interrupter;
    if (warm) {
      this.warmUp();
      await settle();
    }
    this.send({ type: "ready", v: PROTOCOL_VERSION, engine: "quickjs (quickjs-emscripten 0.32)" });
  }

  /** Exercise the first-request paths (context, prelude, run, output, fs, TypeScript) while idle. */
  private warmUp(): void {
    setMuted(true);
    const msg: Configure = { type: "configure", id: 1, seed: 0, clock: "real", env: {}, limits: this.limits, mounts: [], language: "typescript" };
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
    this.dispose();
    this.fs.reset();
    this.spare = this.spareContext();
    setMuted(false);
  }

  /**
   * The spare context, built under the virtual clock from its origin, as configure would build it
   * for a sandbox with the virtual clock (QuickJS reads the clock while it makes a context): the
   * clock reads are kept in `spareClockMs` and restored when the spare is adopted, so the guest's
   * clock starts where it would have. With the real clock the reads went to the virtual one instead,
   * which the guest cannot see (they seed QuickJS's own Math.random, which the prelude replaces).
   */
  private spareContext(): GuestContext {
    const realDateNow = Date.now;
    const saved = { ...clock };
    clock.virtual = true;
    clock.virtualMs = VIRTUAL_EPOCH_MS;
    Date.now = virtualNow;
    try {
      const spare = this.newContext(this.limits.memoryBytes, undefined);
      this.spareClockMs = clock.virtualMs;
      return spare;
    } finally {
      Date.now = realDateNow;
      Object.assign(clock, saved);
    }
  }

  private newContext(memoryBytes: number, network: Configure["network"]): GuestContext {
    return new GuestContext(this.deps.qjs, memoryBytes, (v) => ({
      ...basicHostFunctions(v, this.output, this.guestRng),
      ...this.loop.hostFunctions(v),
      ...this.fs.hostFunctions(v),
      ...this.fetch.hostFunctions(v, network),
    }));
  }

  handle(msg: HostMessage): void {
    if (msg.type === "fetchResult") return; // for a run that has ended
    if (msg.type === "configure") return this.configure(msg);
    if (!this.runner) return fatal("first message must be configure");
    if (msg.type === "run") {
      this.runner.run(msg.id, msg.code);
      const later = this.loop.takeBacklog();
      if (later.length > 0) {
        setImmediate(() => {
          for (const m of later) this.handle(m);
        });
      }
      return;
    }
    if (msg.type === "fs") return this.fs.hostOp(msg.id, msg.op, msg.path, msg.data, msg.recursive);
    if (msg.type === "reseed") {
      this.rng = seededRng(msg.seed);
      return this.send({ type: "reply", id: msg.id, ok: true });
    }
  }

  private configure(msg: Configure, warming = false): void {
    if (this.runner && !warming) return fatal("configure sent twice");
    const spare = this.spare;
    this.spare = undefined;
    this.dispose();
    this.limits = msg.limits;
    memCap.bytes = msg.limits.memoryBytes;
    const typescript = msg.language === "typescript";
    this.rng = seededRng(msg.seed);
    clock.virtual = msg.clock === "virtual";
    clock.virtualMs = VIRTUAL_EPOCH_MS;
    if (clock.virtual) Date.now = virtualNow; // QuickJS's Date reads the clock through Date.now
    try {
      this.fs.configure(msg);
    } catch (e) {
      spare?.dispose();
      return this.send({ type: "reply", id: msg.id, ok: false, errno: "ENOENT", message: `a mount's host directory cannot be opened: ${(e as Error).message}` });
    }
    if (typescript) this.deps.loadSucrase();
    let guest: GuestContext;
    if (spare && !msg.network && !warming) {
      guest = spare;
      guest.rt.setMemoryLimit(msg.limits.memoryBytes);
      if (clock.virtual) clock.virtualMs = this.spareClockMs;
    } else {
      spare?.dispose();
      guest = this.newContext(msg.limits.memoryBytes, msg.network);
    }
    const reporter = new Reporter(guest, this.output);
    this.loop.attach(guest, reporter);
    this.guest = guest;
    this.runner = new CellRunner({ guest, reporter, loop: this.loop, output: this.output, fs: this.fs, fetch: this.fetch, send: this.send, outputBytes: msg.limits.outputBytes, typescript, loadSucrase: this.deps.loadSucrase, parse: this.deps.parse });
    this.send({ type: "reply", id: msg.id, ok: true });
  }

  /** Free the sandbox's context (idempotent); the session is unconfigured afterwards. */
  dispose(): void {
    this.spare?.dispose();
    this.spare = undefined;
    this.guest?.dispose();
    this.guest = undefined;
    this.runner = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
