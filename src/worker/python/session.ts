// One sandbox in a Python worker: dispatches the host's messages (configure, run, fs), sets the
// per-sandbox state the Wasm import hooks read (memory cap, seeded entropy, virtual clock), runs a
// cell through the snapshot's `_agentbox.run` and reports its result and the limit it hit (its rich
// results go out as they happen, through display-channel.ts; its HTTP requests go to the host
// through net-channel.ts), and warms a pooled worker's
// first-request paths before it reports ready.
import { encodeFrame, FrameDecoder, PROTOCOL_VERSION } from "../../protocol/frames.js";
import type { HostMessage, WorkerLimits } from "../../protocol/messages.js";
import { ResultGate } from "../../protocol/display.js";
import { beginRun, fatal, REASON_OUTPUT, realNow, seededRng, send, setMuted, settle, VIRTUAL_EPOCH_MS, VIRTUAL_TICK_MS } from "../common.js";
import { DisplayChannel, type DeviceFs } from "./display-channel.js";
import { FsBridge } from "./fs-bridge.js";
import { NetChannel, type NetInbox } from "./net-channel.js";
import { OutputCapture } from "./output.js";
import type { Pyodide, PyProxyFn, WasmHooks } from "./pyodide.js";

export const HOME = "/home/user";

/** Rounds of warm-up a pooled worker runs before it reports ready. */
const WARM_ROUNDS = 30;

function guestEnv(env: Record<string, string>): Record<string, string> {
  return { HOME, LANG: "C.UTF-8", TZ: "UTC", ...env };
}

export class PythonSession {
  private readonly output: OutputCapture;
  private fs!: FsBridge;
  private limits: WorkerLimits;
  private configured = false;
  private runFn!: PyProxyFn;
  private configureFn!: PyProxyFn;
  private reseedFn!: PyProxyFn;
  /**
   * The guest env (as configure's JSON) a pooled worker's warm-up left configured, with a fresh
   * `__main__`, the home directory made and current, the cell count at 0: a first configure with
   * the same env only reseeds. Unset once configured, and in a worker that did not warm up.
   */
  private pristineEnv: string | undefined;
  private display!: DisplayChannel;
  private net!: NetChannel;

  constructor(
    private readonly py: Pyodide,
    private readonly hooks: WasmHooks,
    private readonly words: Int32Array,
    private readonly warm: boolean,
    private readonly netInbox: NetInbox,
  ) {
    this.output = new OutputCapture(words);
    this.limits = { memoryBytes: this.hooks.memCapBytes, outputBytes: 1 << 20, vfsBytes: 0, vfsFiles: 0 };
  }

  /** `interrupter`: resolves once the interrupt thread listens (started early, in parallel). */
  async start(interrupter: Promise<void>): Promise<void> {
    const { py } = this;
    py.setStdout({ write: (b) => this.output.write("stdout", b) });
    py.setStderr({ write: (b) => this.output.write("stderr", b) });
    this.hooks.onClock = () => this.output.tick();
    py.setInterruptBuffer(this.words);
    const mod = py.pyimport("_agentbox");
    this.runFn = mod.run!;
    this.configureFn = mod.configure!;
    this.reseedFn = mod.reseed!;
    // Before the file system's accounting starts: the device's node comes and goes uncounted.
    this.display = new DisplayChannel(py.FS as unknown as DeviceFs);
    this.net = new NetChannel(py.FS as unknown as DeviceFs, { inbox: this.netInbox, send, words: this.words, idle: () => this.output.tick(), now: realNow });
    const netModule = py.pyimport("_agentbox_net");
    netModule.attach!(this.net.fd);
    netModule.destroy();
    this.fs = new FsBridge(py, send);
    await interrupter;
    if (this.warm) {
      this.warmUp();
      await settle();
    }
    // Its own globals: `__main__` stays as the warm-up's last configure left it.
    const version = String(py.runPython("import sys; sys.version", { globals: py.globals.get("dict")() }));
    send({ type: "ready", v: PROTOCOL_VERSION, pythonVersion: version, pyodideVersion: py.version });
  }

  /**
   * V8 compiles Wasm functions on first call: exercise the paths a first run takes (compile, run,
   * print, repr, errors, the seeded cipher) while idle, so a pooled sandbox's first run is fast.
   */
  private warmUp(): void {
    seededRng(0)(new Uint8Array(64));
    const warm = "import os, random\nos.environ.copy()\nrandom.Random(1).random()\nprint('warm')\n[x * 2 for x in range(10)]\n";
    const env = JSON.stringify(guestEnv({}));
    const frames = new FrameDecoder();
    setMuted(true);
    this.configured = true;
    // Several rounds through the same code paths a first request takes (frame decode, run,
    // output, digest, file ops): V8 optimises hot JS and Wasm functions only after some use.
    for (let i = 0; i < WARM_ROUNDS; i++) {
      const msgs = frames.push(encodeFrame({ type: "run", id: 1, code: warm }));
      for (const m of msgs) this.handle(m as HostMessage);
      this.handle({ type: "run", id: 1, code: "print(1)" });
      this.handle({ type: "run", id: 1, code: "1" });
      // Tier "auto"'s check, both answers (runs, and needs the heavy tier).
      this.handle({ type: "run", id: 1, code: warm, nanoOnly: true });
      this.handle({ type: "run", id: 1, code: "import subprocess", nanoOnly: true });
      this.handle({ type: "fs", id: 1, op: "write", path: "/tmp/.warm", data: "d2FybQ==" });
      this.handle({ type: "fs", id: 1, op: "read", path: "/tmp/.warm" });
      this.handle({ type: "fs", id: 1, op: "list", path: "/tmp" });
      this.handle({ type: "fs", id: 1, op: "remove", path: "/tmp/.warm" });
      this.configureFn(env, HOME);
    }
    this.handle({ type: "run", id: 1, code: "def f():\n    raise ValueError('warm')\nf()" });
    this.py.runPython("import gc as _gc\n_gc.collect()\ndel _gc", { globals: this.py.globals.get("dict")() });
    // Last: the state the first configure finds is exactly what configure makes (see pristineEnv).
    this.configureFn(env, HOME);
    this.pristineEnv = env;
    this.configured = false;
    setMuted(false);
  }

  handle(msg: HostMessage): void {
    if (msg.type === "configure") return this.configure(msg);
    if (!this.configured) return fatal("first message must be configure");
    if (msg.type === "run") return this.run(msg.id, msg.code, msg.nanoOnly === true);
    if (msg.type === "fs") return this.fs.hostOp(msg.id, msg.op, msg.path, msg.data, msg.recursive);
    if (msg.type === "reseed") return this.reseed(msg.id, msg.seed);
  }

  /** A new seeded stream, and `random` reseeded from it as configure does (so `random` follows the new seed too). */
  private reseed(id: number, seed: number): void {
    this.hooks.rng = seededRng(seed);
    this.reseedFn();
    send({ type: "reply", id, ok: true });
  }

  private configure(msg: Extract<HostMessage, { type: "configure" }>): void {
    if (this.configured) return fatal("configure sent twice");
    this.limits = msg.limits;
    this.hooks.memCapBytes = msg.limits.memoryBytes;
    this.hooks.rng = seededRng(msg.seed);
    // Without a grant the guest's requests are refused in the worker: nothing reaches the host.
    this.net.grant = msg.network;
    if (msg.clock === "virtual") {
      const virtualNow = () => (this.hooks.virtualMs += VIRTUAL_TICK_MS);
      Date.now = virtualNow;
      performance.now = () => virtualNow() - VIRTUAL_EPOCH_MS;
    }
    // A pooled worker's first configure with the env its warm-up left: only the seeded stream is
    // new, so only `random` is reseeded from it, as configure would (the same 32 bytes drawn).
    const env = JSON.stringify(guestEnv(msg.env));
    if (env === this.pristineEnv) this.reseedFn();
    else this.configureFn(env, HOME);
    this.pristineEnv = undefined;
    for (const m of msg.mounts) this.fs.mount(m);
    // Quotas apply from here on: what the host writes counts like what the guest writes.
    this.fs.accounting.quota = { vfsBytes: msg.limits.vfsBytes, vfsFiles: msg.limits.vfsFiles };
    this.configured = true;
    this.hooks.memHit = false;
    send({ type: "reply", id: msg.id, ok: true });
  }

  /** Run a cell; with `nanoOnly` (tier "auto") the guest first checks that it needs nothing only the heavy tier has. */
  private run(id: number, code: string, nanoOnly = false): void {
    const t0 = realNow();
    beginRun(this.words, id);
    this.hooks.memHit = false;
    this.fs.accounting.takeLimitHit();
    this.output.start(id, this.limits.outputBytes);
    // Notes count as stderr. A result is charged against the output cap when it passes, so later
    // output and the value get what room it left.
    const note = (text: string) => void this.output.write("stderr", new TextEncoder().encode(text));
    const shown = new ResultGate({ room: () => this.output.room, charge: (n) => (this.output.bytes += n) }, note, (result) => send({ type: "display", id, result }));
    this.display.begin({
      line: (text) => {
        let raw: unknown;
        try {
          raw = JSON.parse(text);
        } catch {
          return note("display: a malformed result was dropped: not JSON\n");
        }
        shown.add(raw);
      },
      tooLong: (bytes) => {
        shown.cut = true;
        note(`display: a result of over ${bytes} bytes did not fit in the output limit (limits.outputBytes); dropped\n`);
      },
      // JSON text from the emit hook is ASCII: at most 6 bytes (\u00XX) per byte of a result.
      maxLineBytes: () => 6 * this.output.room + 4096,
    });
    let value: string | null = null;
    let error: { name: string; message: string; traceback: string } | null = null;
    let rawResults: unknown = undefined;
    let resultsCut = false;
    let heavy: string | null = null;
    try {
      // One more character than fits, so a value that was cut is seen as over the limit below.
      const raw = this.runFn(code, this.limits.outputBytes + 1, this.display.fd, nanoOnly) as string;
      const parsed = JSON.parse(raw) as { value: string | null; error: typeof error; results?: unknown; cut?: unknown; heavy?: unknown };
      if (typeof parsed.heavy === "string" && parsed.heavy !== "") heavy = parsed.heavy;
      value = parsed.value;
      error = parsed.error;
      rawResults = parsed.results;
      resultsCut = parsed.cut === true;
    } catch (e) {
      // An exception escaped the runner itself (e.g. KeyboardInterrupt between statements).
      const err = e as { type?: string; message?: string };
      if (typeof err.type !== "string") return fatal(`interpreter failed: ${String((e as Error)?.stack ?? e)}`);
      const text = String(err.message ?? "");
      const last = text.split("\n").filter(Boolean).pop() ?? "";
      error = { name: err.type, message: last.startsWith(`${err.type}: `) ? last.slice(err.type.length + 2) : last, traceback: text };
    }
    this.display.end();
    this.net.endRun();
    // Results the emit hook could not send come with the run's answer: they go out now, in order.
    if (Array.isArray(rawResults)) for (const r of rawResults) shown.add(r);
    else if (rawResults !== undefined && rawResults !== null) note("display: the run's results were not a list; dropped\n");
    const reason = Atomics.load(this.words, 1);
    Atomics.store(this.words, 2, 0);
    Atomics.store(this.words, 0, 0);
    if (heavy !== null) {
      this.output.end();
      send({ type: "needsHeavy", id, reason: heavy });
      return;
    }
    if (value !== null) {
      const room = Math.max(0, this.limits.outputBytes - this.output.bytes);
      if (Buffer.byteLength(value) > room) {
        value = Buffer.from(value).subarray(0, room).toString("utf8");
        this.output.hit = true;
      }
    }
    if (resultsCut || shown.cut) this.output.hit = true;
    this.output.end();
    const vfsHit = this.fs.accounting.takeLimitHit();
    const limitHit =
      this.output.hit || reason === REASON_OUTPUT ? "outputBytes"
      : reason === 1 ? "timeoutMs"
      : this.hooks.memHit ? "memoryMb"
      : vfsHit ?? null;
    send({ type: "result", id, value, error, limitHit, durationMs: realNow() - t0, vfsDigest: this.fs.accounting.digest() });
  }
}
