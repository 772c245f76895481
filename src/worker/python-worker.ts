// Entry point of a Python worker process: CPython (Pyodide) in WebAssembly, one sandbox per
// process. The host starts it with Node's tightest flags (no code generation from strings, the
// permission model, a heap cap), so even a guest that reached JavaScript would find little.
//
//   node [flags] python-worker.js serve <pyodideDir> [snapshotFile]
//   node [flags] python-worker.js make-snapshot <pyodideDir> <snapshotFile>
//
// Protocol: frames (see protocol/frames.ts) on stdin/stdout; the control pipe (fd 3) carries
// interrupt requests; stderr is for diagnostics only.
//
// The interpreter runs on a thread of its own, started with a large stack: CPython's recursion
// checks measure its shadow stack in Wasm memory, while each Wasm frame also takes V8's native
// stack, several times as much. On the main thread (under 1 MB by default, at most the OS stack)
// V8 ran out first and the "Maximum call stack size exceeded" killed the interpreter; here the
// native stack is far larger than the recursion window CPython is given (see limitCStack).
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { isMainThread, MessageChannel, type MessagePort, Worker, workerData } from "node:worker_threads";
import { encodeFrame, FrameDecoder, PROTOCOL_VERSION } from "../protocol/frames.js";
import type { FsOp, HostMessage, WorkerLimits, WorkerMount } from "../protocol/messages.js";
import { compareCodePoints, ERRNO, errnoName, MemfsAccounting, QUOTA_MARK, type EmFs, type EmNode } from "../vfs/memfs.js";
import { beginRun, fatal, INTERRUPT_WORDS, OutputBatcher, readHostFrames, REASON_OUTPUT, realNow, seededRng, send, setMuted, settle, startInterrupter, VIRTUAL_EPOCH_MS, VIRTUAL_TICK_MS } from "./common.js";
import { CLOSE_BRIDGE, SETUP } from "./python-guest.js";

const HOME = "/home/user";

// ---------------------------------------------------------------------------------------------
// State the Wasm import hooks read. Mutable: a pooled worker is configured after it restored.

const hooks = {
  memCapBytes: 1024 * 1024 * 1024,
  memHit: false,
  virtualMs: VIRTUAL_EPOCH_MS,
  /** null until configured: real entropy while booting. */
  rng: null as null | ((view: Uint8Array) => void),
  memory: null as { buffer: ArrayBuffer } | null,
  /** Called on every clock read from the guest: a blocked guest (sleep, polling) still reads the
   *  clock, so buffered output gets out while it waits. */
  onClock: null as null | (() => void),
};

function virtualNow(): number {
  hooks.virtualMs += VIRTUAL_TICK_MS;
  return hooks.virtualMs;
}

type Imports = Record<string, Record<string, unknown>>;
type Fn = (...args: number[]) => number;

/** Wraps the Wasm imports Pyodide hands to the instance: memory cap, entropy, no sockets/shell. */
function hookImports(imports: Imports): void {
  const env = imports.env!;
  const wasi = imports.wasi_snapshot_preview1!;
  const resize = env.emscripten_resize_heap as Fn;
  env.emscripten_resize_heap = (requested: number) => {
    if (requested >>> 0 > hooks.memCapBytes) {
      hooks.memHit = true;
      return 0;
    }
    return resize(requested);
  };
  env.emscripten_get_heap_max = () => hooks.memCapBytes;
  for (const [mod, name] of [[env, "emscripten_get_now"], [env, "emscripten_date_now"], [wasi, "clock_time_get"]] as const) {
    const clock = mod[name] as Fn;
    mod[name] = (...a: number[]) => {
      hooks.onClock?.();
      return clock(...a);
    };
  }
  const randomGet = wasi.random_get as Fn;
  wasi.random_get = (ptr: number, len: number) => {
    if (!hooks.rng || !hooks.memory) return randomGet(ptr, len);
    hooks.rng(new Uint8Array(hooks.memory.buffer, ptr >>> 0, len >>> 0));
    return 0;
  };
  // No sockets and no shell, whatever Python asks for: EACCES / failure.
  env.__syscall_socket = () => -ERRNO.EACCES;
  env.__syscall_socketpair = () => -ERRNO.EACCES;
  env._emscripten_system = () => -1;
  // Emscripten's "run this JavaScript" helpers, reachable through ctypes: refuse quietly instead of
  // letting the (code-generation-disabled) eval throw through the interpreter.
  env.emscripten_run_script = Object.assign(() => undefined, { sig: "vp" });
  env.emscripten_run_script_int = Object.assign(() => 0, { sig: "ip" });
  env.emscripten_run_script_string = Object.assign(() => 0, { sig: "pp" });
}

// ---------------------------------------------------------------------------------------------
// Pyodide types we use (the package's own .d.ts is not imported: the worker loads it by path).

interface PyProxyFn {
  (...args: unknown[]): unknown;
  destroy(): void;
}
interface Pyodide {
  version: string;
  FS: EmFs & {
    readFile(p: string): Uint8Array;
    writeFile(p: string, data: Uint8Array): void;
    mkdirTree(p: string): void;
    readdir(p: string): string[];
    lstat(p: string): { mode: number; size: number };
    stat(p: string): { mode: number; size: number };
    unlink(p: string): void;
    rmdir(p: string): void;
    analyzePath(p: string): { exists: boolean };
    mount(type: unknown, opts: unknown, mountpoint: string): void;
    lookupPath(p: string, opts?: { follow?: boolean }): { node: EmNode };
  };
  runPython(code: string, opts?: { globals?: unknown }): unknown;
  globals: { get(name: string): PyProxyFn };
  pyimport(name: string): Record<string, PyProxyFn> & { destroy(): void };
  setStdout(opts: { write: (buf: Uint8Array) => number }): void;
  setStderr(opts: { write: (buf: Uint8Array) => number }): void;
  setStdin(opts: { error: boolean }): void;
  setInterruptBuffer(buf: Int32Array): void;
  unregisterJsModule(name: string): void;
  makeMemorySnapshot(): Uint8Array;
  _module: Record<string, Fn>;
}

/** Native (V8) stack of the interpreter thread. Virtual memory: pages are used only as touched. */
const INTERPRETER_STACK_MB = 256;
/** JS heap of the interpreter thread (the guest's memory is Wasm memory, capped separately). */
const INTERPRETER_HEAP_MB = 192;
/**
 * How much of the Wasm shadow stack (10 MB) CPython may use before it raises RecursionError.
 * Measured per level of C recursion (repr of nested lists, json, pickle, recursive __repr__): V8's
 * stack grows 1-9x as fast as the shadow stack (in V8's baseline tier; less once optimised), so
 * 1 MB here keeps native use far under INTERPRETER_STACK_MB, and still allows ~30,000 nested list
 * reprs or ~2,000 recursive __repr__ calls (Python's own limit, 1000 frames, comes first there).
 * Smaller than the whole shadow stack also because some C paths are quadratic in their depth
 * (repr of nested lists: ~9 s to fail at 2 MB, ~2 s at 1 MB).
 */
const C_STACK_WINDOW_BYTES = 1024 * 1024;

/** Narrow CPython's C-recursion window to the top C_STACK_WINDOW_BYTES of the shadow stack. */
function limitCStack(py: Pyodide): void {
  const m = py._module;
  const base = m._emscripten_stack_get_base!() >>> 0; // the stack grows down from here
  const tstate = m._PyThreadState_Get!();
  if (m._PyUnstable_ThreadState_SetStackProtection!(tstate, base - C_STACK_WINDOW_BYTES, C_STACK_WINDOW_BYTES) !== 0) {
    fatal("could not set the interpreter's stack protection");
  }
}

async function boot(pyodideDir: string, snapshotBytes: Promise<Uint8Array> | undefined, makeSnapshot: boolean): Promise<Pyodide> {
  // Under the permission model process.binding is denied; NODEFS only needs the fs constants.
  const proc = process as unknown as { binding: (name: string) => unknown };
  proc.binding = (name: string) => {
    if (name === "constants") return { fs: fs.constants };
    throw new Error(`process.binding(${name}) is not available in the sandbox worker`);
  };
  const pyodideMjs = pathToFileURL(path.join(pyodideDir, "pyodide.mjs")).href;
  const asmMjs = pathToFileURL(path.join(pyodideDir, "pyodide.asm.mjs")).href;
  const { loadPyodide } = (await import(pyodideMjs)) as { loadPyodide: (o: Record<string, unknown>) => Promise<Pyodide> };
  const asm = (await import(asmMjs)) as { default: (settings: Record<string, unknown>) => Promise<unknown> };
  const createPyodideModule = (settings: Record<string, unknown>) => {
    type Instance = { exports: Record<string, unknown> };
    type Ready = (instance: Instance, module: unknown) => void;
    const instantiate = settings.instantiateWasm as (imports: Imports, cb: Ready) => unknown;
    settings.instantiateWasm = (imports: Imports, cb: Ready) => {
      hookImports(imports);
      return instantiate(imports, (instance, module) => {
        hooks.memory = instance.exports.memory as { buffer: ArrayBuffer };
        cb(instance, module);
      });
    };
    return asm.default(settings);
  };
  const bootLog: string[] = [];
  const snapshot = await snapshotBytes;
  const py = await loadPyodide({
    indexURL: pyodideDir + path.sep,
    createPyodideModule,
    jsglobals: Object.freeze(Object.create(null) as object),
    env: { HOME, PYTHONHASHSEED: "0", LANG: "C.UTF-8", TZ: "UTC" },
    stdout: (s: string) => bootLog.push(s),
    stderr: (s: string) => bootLog.push(s),
    checkAPIVersion: true,
    ...(makeSnapshot ? { _makeSnapshot: true } : {}),
    ...(snapshot ? { _loadSnapshot: snapshot } : {}),
  });
  limitCStack(py);
  if (!snapshot) py.runPython(SETUP, { globals: py.globals.get("dict")() });
  return py;
}

/** Everything after boot that must hold for every sandbox: bridge closed, streams, interrupts. */
function harden(py: Pyodide): void {
  py.unregisterJsModule("js");
  py.unregisterJsModule("pyodide_js");
  py.runPython(CLOSE_BRIDGE, { globals: py.globals.get("dict")() });
  // Emscripten's glue looked these up at load; the guest has no way to them, and now neither does anyone.
  delete (globalThis as Record<string, unknown>).require;
  py.setStdin({ error: true });
}

// ---------------------------------------------------------------------------------------------
// Per-run output capture with the output limit enforced at the source.

const words = new Int32Array(new SharedArrayBuffer(4 * INTERRUPT_WORDS)); // see beginRun

/** Python hands output over as bytes: cut at the cap in bytes, decoded per stream. */
class OutputCapture extends OutputBatcher {
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };

  write(stream: "stdout" | "stderr", buf: Uint8Array): number {
    if (!this.open) return buf.length;
    const fit = this.admit(buf.length);
    this.push(stream, this.decoders[stream].decode(buf.subarray(0, fit), { stream: !this.hit }));
    return buf.length;
  }

  override end(): void {
    for (const s of ["stdout", "stderr"] as const) {
      const rest = this.decoders[s].decode();
      if (rest) this.write(s, new TextEncoder().encode(rest));
    }
    super.end();
  }
}

// ---------------------------------------------------------------------------------------------

/** Rounds of warm-up a pooled worker runs before it reports ready. */
const WARM_ROUNDS = 30;

function guestEnv(env: Record<string, string>): Record<string, string> {
  return { HOME, LANG: "C.UTF-8", TZ: "UTC", ...env };
}

class WorkerSession {
  private readonly output = new OutputCapture(words);
  private accounting!: MemfsAccounting;
  private limits: WorkerLimits = { memoryBytes: hooks.memCapBytes, outputBytes: 1 << 20, vfsBytes: 0, vfsFiles: 0 };
  private configured = false;
  private runFn!: PyProxyFn;
  private configureFn!: PyProxyFn;

  constructor(
    private readonly py: Pyodide,
    private readonly warm: boolean,
  ) {}

  /** `interrupter`: resolves once the interrupt thread listens (started early, in parallel). */
  async start(interrupter: Promise<void>): Promise<void> {
    const { py } = this;
    py.setStdout({ write: (b) => this.output.write("stdout", b) });
    py.setStderr({ write: (b) => this.output.write("stderr", b) });
    hooks.onClock = () => this.output.tick();
    py.setInterruptBuffer(words);
    const mod = py.pyimport("_agentbox");
    this.runFn = mod.run!;
    this.configureFn = mod.configure!;
    // No quota until configured: mount points and the home directory are made first.
    this.accounting = new MemfsAccounting(py.FS, { vfsBytes: Infinity, vfsFiles: Infinity });
    this.accounting.install();
    await interrupter;
    if (this.warm) {
      this.warmUp();
      await settle();
    }
    const version = String(py.runPython("import sys; sys.version"));
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
      this.handle({ type: "fs", id: 1, op: "write", path: "/tmp/.warm", data: "d2FybQ==" });
      this.handle({ type: "fs", id: 1, op: "read", path: "/tmp/.warm" });
      this.handle({ type: "fs", id: 1, op: "list", path: "/tmp" });
      this.handle({ type: "fs", id: 1, op: "remove", path: "/tmp/.warm" });
      this.configureFn(env, HOME);
    }
    this.handle({ type: "run", id: 1, code: "def f():\n    raise ValueError('warm')\nf()" });
    this.configureFn(env, HOME);
    this.configured = false;
    setMuted(false);
  }

  handle(msg: HostMessage): void {
    if (msg.type === "configure") return this.configure(msg);
    if (!this.configured) return fatal("first message must be configure");
    if (msg.type === "run") return this.run(msg.id, msg.code);
    if (msg.type === "fs") return this.fsOp(msg.id, msg.op, msg.path, msg.data, msg.recursive);
  }

  private configure(msg: Extract<HostMessage, { type: "configure" }>): void {
    if (this.configured) return fatal("configure sent twice");
    this.limits = msg.limits;
    hooks.memCapBytes = msg.limits.memoryBytes;
    hooks.rng = seededRng(msg.seed);
    if (msg.clock === "virtual") {
      Date.now = virtualNow;
      performance.now = () => virtualNow() - VIRTUAL_EPOCH_MS;
    }
    this.configureFn(JSON.stringify(guestEnv(msg.env)), HOME);
    for (const m of msg.mounts) this.mount(m);
    // Quotas apply from here on: what the host writes counts like what the guest writes.
    this.accounting.quota = { vfsBytes: msg.limits.vfsBytes, vfsFiles: msg.limits.vfsFiles };
    this.configured = true;
    hooks.memHit = false;
    send({ type: "reply", id: msg.id, ok: true });
  }

  private mount(m: WorkerMount): void {
    const FS = this.py.FS as unknown as Record<string, unknown> & Pyodide["FS"];
    FS.mkdirTree(m.guestPath);
    const NODEFS = (FS.filesystems as unknown as Record<string, NodeFsOps>).NODEFS!;
    guardNodefs(NODEFS, FS.ErrnoError, this.accounting);
    FS.mount(NODEFS, { root: m.hostPath, readOnly: m.readOnly }, m.guestPath);
  }

  private run(id: number, code: string): void {
    const t0 = realNow();
    beginRun(words, id);
    hooks.memHit = false;
    this.accounting.takeLimitHit();
    this.output.start(id, this.limits.outputBytes);
    let value: string | null = null;
    let error: { name: string; message: string; traceback: string } | null = null;
    try {
      // One more character than fits, so a value that was cut is seen as over the limit below.
      const raw = this.runFn(code, this.limits.outputBytes + 1) as string;
      const parsed = JSON.parse(raw) as { value: string | null; error: typeof error };
      value = parsed.value;
      error = parsed.error;
    } catch (e) {
      // An exception escaped the runner itself (e.g. KeyboardInterrupt between statements).
      const err = e as { type?: string; message?: string };
      if (typeof err.type !== "string") return fatal(`interpreter failed: ${String((e as Error)?.stack ?? e)}`);
      const text = String(err.message ?? "");
      const last = text.split("\n").filter(Boolean).pop() ?? "";
      error = { name: err.type, message: last.startsWith(`${err.type}: `) ? last.slice(err.type.length + 2) : last, traceback: text };
    }
    const reason = Atomics.load(words, 1);
    Atomics.store(words, 2, 0);
    Atomics.store(words, 0, 0);
    if (value !== null) {
      const room = Math.max(0, this.limits.outputBytes - this.output.bytes);
      if (Buffer.byteLength(value) > room) {
        value = Buffer.from(value).subarray(0, room).toString("utf8");
        this.output.hit = true;
      }
    }
    this.output.end();
    const vfsHit = this.accounting.takeLimitHit();
    const limitHit =
      this.output.hit || reason === REASON_OUTPUT ? "outputBytes"
      : reason === 1 ? "timeoutMs"
      : hooks.memHit ? "memoryMb"
      : vfsHit ?? null;
    send({ type: "result", id, value, error, limitHit, durationMs: realNow() - t0, vfsDigest: this.accounting.digest() });
  }

  private fsOp(id: number, op: FsOp, p: string, data: string | undefined, recursive: boolean | undefined): void {
    const FS = this.py.FS;
    try {
      if (!p.startsWith("/") || p.includes("\0")) throw new FS.ErrnoError(ERRNO.EINVAL);
      switch (op) {
        case "write": {
          const dir = path.posix.dirname(p);
          if (dir !== "/") FS.mkdirTree(dir);
          FS.writeFile(p, Buffer.from(data ?? "", "base64"));
          return send({ type: "reply", id, ok: true });
        }
        case "read":
          return send({ type: "reply", id, ok: true, data: Buffer.from(FS.readFile(p)).toString("base64") });
        case "exists":
          return send({ type: "reply", id, ok: true, exists: FS.analyzePath(p).exists });
        case "mkdir":
          // mkdirTree ignores EEXIST even for a file; like `mkdir -p`, only a directory may be there.
          FS.mkdirTree(p);
          if (!FS.isDir(FS.stat(p).mode)) throw new FS.ErrnoError(ERRNO.EEXIST);
          return send({ type: "reply", id, ok: true });
        case "list": {
          const names = FS.readdir(p).filter((n) => n !== "." && n !== "..").sort(compareCodePoints);
          const entries = names.map((name) => {
            const full = p === "/" ? `/${name}` : `${p}/${name}`;
            const st = FS.lstat(full);
            const type = FS.isDir(st.mode) ? "dir" : FS.isLink(st.mode) ? "symlink" : "file";
            return { name, path: full, type, size: type === "file" ? st.size : 0 };
          });
          return send({ type: "reply", id, ok: true, entries });
        }
        case "remove":
          removeTree(FS, p, recursive ?? true);
          return send({ type: "reply", id, ok: true });
      }
    } catch (e) {
      const err = e as { errno?: number; message?: string } & Record<symbol, unknown>;
      const limit = err[QUOTA_MARK] as "vfsBytes" | "vfsFiles" | undefined;
      if (err.errno === undefined) return fatal(`file operation failed: ${String((e as Error)?.stack ?? e)}`);
      send({ type: "reply", id, ok: false, errno: errnoName(err.errno), message: describeErrno(err.errno), ...(limit ? { limit } : {}) });
    }
  }
}

function removeTree(FS: Pyodide["FS"], p: string, recursive: boolean): void {
  const st = FS.lstat(p);
  if (!FS.isDir(st.mode)) return FS.unlink(p);
  if (recursive) {
    for (const name of FS.readdir(p)) if (name !== "." && name !== "..") removeTree(FS, `${p}/${name}`, true);
  }
  FS.rmdir(p);
}

function describeErrno(errno: number): string {
  const name = errnoName(errno);
  const text: Record<string, string> = {
    ENOENT: "no such file or directory",
    EEXIST: "file exists",
    ENOTDIR: "not a directory",
    EISDIR: "is a directory",
    ENOTEMPTY: "directory not empty",
    ENOSPC: "file system byte quota reached",
    EDQUOT: "file system file-count quota reached",
    EROFS: "read-only file system",
    EINVAL: "invalid path",
  };
  return text[name] ?? `file system error ${name}`;
}

// Mounts. Read-only: NODEFS knows nothing of them, so every mutating operation is refused up
// front. Read-write: the host directory's net growth is charged to the sandbox's VFS quota.
interface NodeFsOps {
  node_ops: Record<string, (...a: unknown[]) => unknown>;
  stream_ops: Record<string, (...a: unknown[]) => unknown>;
  realPath(node: unknown): string;
  guarded?: boolean;
}
interface NodeFsNode {
  mode: number;
  mount?: { opts?: { readOnly?: boolean } };
}
interface NodeFsStream {
  node: NodeFsNode;
  flags: number;
  nfd?: number;
}
const O_ACCMODE = 3;
const O_CREAT = 64;
const O_TRUNC = 512;
const O_APPEND = 1024;

type Op = (...a: unknown[]) => unknown;

function guardNodefs(NODEFS: NodeFsOps, ErrnoError: new (n: number) => Error, meter: MemfsAccounting): void {
  if (NODEFS.guarded) return;
  NODEFS.guarded = true;
  const ro = (node: unknown) => Boolean((node as NodeFsNode).mount?.opts?.readOnly);
  /** Size of a host path, 0 when absent or not a regular file. */
  const sizeAt = (p: string) => {
    try {
      const st = fs.lstatSync(p);
      return st.isFile() ? st.size : 0;
    } catch {
      return 0;
    }
  };
  const child = (parent: unknown, name: unknown) => path.join(NODEFS.realPath(parent), String(name));
  const wrap = (table: Record<string, Op>, op: string, f: (orig: Op, ...a: unknown[]) => unknown) => {
    const orig = table[op]!;
    table[op] = (...a: unknown[]) => f(orig, ...a);
  };
  const { node_ops: nodeOps, stream_ops: streamOps } = NODEFS;

  // Accounting first, so the read-only check below wraps it and runs before it.
  wrap(nodeOps, "mknod", (orig, ...a) => {
    meter.chargeExternal(0, 1);
    try {
      return orig(...a);
    } catch (e) {
      meter.chargeExternal(0, -1);
      throw e;
    }
  });
  wrap(nodeOps, "unlink", (orig, parent, name) => {
    const size = sizeAt(child(parent, name));
    const r = orig(parent, name);
    meter.chargeExternal(-size, -1);
    return r;
  });
  wrap(nodeOps, "rmdir", (orig, parent, name) => {
    const r = orig(parent, name);
    meter.chargeExternal(0, -1);
    return r;
  });
  wrap(nodeOps, "rename", (orig, node, newDir, newName) => {
    const target = child(newDir, newName);
    const replaced = fs.existsSync(target) ? sizeAt(target) : -1;
    const r = orig(node, newDir, newName);
    if (replaced >= 0) meter.chargeExternal(-replaced, -1);
    return r;
  });
  const resize = (orig: Op, before: number, size: number, ...a: unknown[]) => {
    if (size > before) meter.chargeExternal(size - before, 0);
    const r = orig(...a);
    if (size < before) meter.chargeExternal(size - before, 0);
    return r;
  };
  wrap(nodeOps, "setattr", (orig, node, attr) => {
    const size = (attr as { size?: number }).size;
    if (size === undefined) return orig(node, attr);
    return resize(orig, sizeAt(NODEFS.realPath(node)), size, node, attr);
  });
  wrap(streamOps, "setattr", (orig, stream, attr) => {
    const s = stream as NodeFsStream;
    const size = (attr as { size?: number }).size;
    if (size === undefined || s.nfd === undefined) return orig(stream, attr);
    if (ro(s.node)) throw new ErrnoError(ERRNO.EROFS);
    return resize(orig, fs.fstatSync(s.nfd).size, size, stream, attr);
  });
  wrap(streamOps, "open", (orig, stream) => {
    const s = stream as NodeFsStream;
    const truncated = s.flags & O_TRUNC ? sizeAt(NODEFS.realPath(s.node)) : 0;
    const r = orig(stream);
    if (truncated > 0) meter.chargeExternal(-truncated, 0);
    return r;
  });
  wrap(streamOps, "write", (orig, stream, buffer, offset, length, position) => {
    const s = stream as NodeFsStream;
    const size = s.nfd !== undefined ? fs.fstatSync(s.nfd).size : 0;
    const growth = Math.max(0, Number(position) + Number(length) - size);
    if (growth > 0) meter.chargeExternal(growth, 0);
    return orig(stream, buffer, offset, length, position);
  });

  // Read-only mounts refuse every mutation; no mount gets symlinks planted in host directories.
  for (const op of ["setattr", "mknod", "rename", "unlink", "rmdir", "symlink"]) {
    wrap(nodeOps, op, (orig, ...a) => {
      if (ro(a[0])) throw new ErrnoError(ERRNO.EROFS);
      if (op === "symlink") throw new ErrnoError(ERRNO.EPERM);
      return orig(...a);
    });
  }
  wrap(streamOps, "open", (orig, stream) => {
    const s = stream as NodeFsStream;
    if (ro(s.node) && (s.flags & O_ACCMODE || s.flags & (O_CREAT | O_TRUNC | O_APPEND))) throw new ErrnoError(ERRNO.EROFS);
    return orig(stream);
  });
  wrap(streamOps, "write", (orig, stream, ...a) => {
    if (ro((stream as NodeFsStream).node)) throw new ErrnoError(ERRNO.EROFS);
    return orig(stream, ...a);
  });
}

// ---------------------------------------------------------------------------------------------

/**
 * Main thread: start the interpreter thread and pass it the host's frames (decoded here, posted
 * on a message port: a piped stdin stream added ~10 ms to a pooled sandbox's first request).
 * Exits with the interpreter thread; the host closing stdin ends both.
 */
function launch(): void {
  const { port1, port2 } = new MessageChannel();
  const thread = new Worker(new URL(import.meta.url), {
    argv: process.argv.slice(2),
    workerData: { port: port2 },
    transferList: [port2],
    resourceLimits: { stackSizeMb: INTERPRETER_STACK_MB, maxOldGenerationSizeMb: INTERPRETER_HEAP_MB },
  });
  thread.on("error", (e) => fatal(`interpreter thread failed: ${String(e?.stack ?? e)}`));
  thread.on("exit", (code) => process.exit(code));
  readHostFrames((msgs) => port1.postMessage(msgs));
}

async function main(): Promise<void> {
  const [mode, pyodideDir, snapshotFile, flag] = process.argv.slice(2);
  if (!pyodideDir || (mode !== "serve" && mode !== "make-snapshot")) fatal("usage: python-worker.js serve|make-snapshot <pyodideDir> [snapshot]");
  if (mode === "make-snapshot") {
    if (!snapshotFile) fatal("make-snapshot needs a file");
    const py = await boot(pyodideDir, undefined, true);
    const bytes = py.makeMemorySnapshot();
    const tmp = `${snapshotFile}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, snapshotFile);
    send({ type: "ready", v: PROTOCOL_VERSION, pythonVersion: "", pyodideVersion: py.version });
    return;
  }
  // The interrupt thread and the snapshot read run while the main thread loads the engine.
  const interrupter = startInterrupter(words);
  const snapshot = snapshotFile ? fs.promises.readFile(snapshotFile) : undefined;
  const py = await boot(pyodideDir, snapshot, false);
  harden(py);
  const session = new WorkerSession(py, flag === "warm");
  await session.start(interrupter);
  const { port } = workerData as { port: MessagePort };
  port.on("message", (msgs: unknown[]) => {
    for (const m of msgs) {
      try {
        session.handle(m as HostMessage);
      } catch (e) {
        fatal(`request failed: ${String((e as Error)?.stack ?? e)}`);
      }
    }
  });
}

if (isMainThread) launch();
else main().catch((e: unknown) => fatal(`worker failed to start: ${String((e as Error)?.stack ?? e)}`));
