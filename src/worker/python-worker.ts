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
//
// This file keeps what goes into the memory snapshot (boot, the Wasm import hooks; the snapshot's
// cache key hashes this file and python-guest.js) and the thread entry points; the sandbox itself
// is python/session.ts with python/fs-bridge.ts and python/output.ts.
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { isMainThread, MessageChannel, type MessagePort, receiveMessageOnPort, Worker, workerData } from "node:worker_threads";
import { PROTOCOL_VERSION } from "../protocol/frames.js";
import type { HostMessage } from "../protocol/messages.js";
import { ERRNO } from "../vfs/memfs.js";
import { fatal, grantsNetwork, INTERRUPT_WORDS, isStdinHandover, readHostFrames, send, serveStdinDirect, startInterrupter, type StdinHandover, VIRTUAL_EPOCH_MS } from "./common.js";
import { CLOSE_BRIDGE, SETUP } from "./python-guest.js";
import type { NetInbox } from "./python/net-channel.js";
import type { Fn, Pyodide, WasmHooks } from "./python/pyodide.js";
import { HOME, PythonSession } from "./python/session.js";
import { snapshotFromFile } from "./python/snapshot-load.js";

// ---------------------------------------------------------------------------------------------
// State the Wasm import hooks read. Mutable: a pooled worker is configured after it restored.

const hooks: WasmHooks = {
  memCapBytes: 1024 * 1024 * 1024,
  memHit: false,
  virtualMs: VIRTUAL_EPOCH_MS,
  rng: null,
  memory: null,
  onClock: null,
};

type Imports = Record<string, Record<string, unknown>>;

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

async function boot(pyodideDir: string, snapshotFile: string | undefined, makeSnapshot: boolean): Promise<Pyodide> {
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
  const snapshot = snapshotFile ? snapshotFromFile(snapshotFile) : undefined;
  const load = () =>
    loadPyodide({
      indexURL: pyodideDir + path.sep,
      createPyodideModule,
      jsglobals: Object.freeze(Object.create(null) as object),
      env: { HOME, PYTHONHASHSEED: "0", LANG: "C.UTF-8", TZ: "UTC" },
      stdout: (s: string) => bootLog.push(s),
      stderr: (s: string) => bootLog.push(s),
      checkAPIVersion: true,
      ...(makeSnapshot ? { _makeSnapshot: true } : {}),
      ...(snapshot ? { _loadSnapshot: snapshot.bytes } : {}),
    });
  const py = await (snapshot ? snapshot.during(load) : load());
  limitCStack(py);
  if (!snapshot) {
    // guest/display.py (shared with the heavy tier's agent; the build copies it beside this file) defines _make_display for SETUP.
    const globals = py.globals.get("dict")();
    py.runPython(fs.readFileSync(new URL("./display.py", import.meta.url), "utf8"), { globals });
    // HTTP through the host (python/net-channel.ts is its other half); the build copies it here too.
    py.runPython(fs.readFileSync(new URL("./python/network.guest.py", import.meta.url), "utf8"), { globals, filename: "<agentbox-network>" });
    py.runPython(SETUP, { globals });
  }
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

/**
 * Main thread: start the interpreter thread, which reads the host's frames itself (see
 * serveStdinDirect in common.ts). Once a configure grants network it hands stdin back: from then
 * on this thread decodes the host's frames and passes them on a message port (the fetch answers on
 * a port of their own, which the interpreter thread, blocked inside a request, takes
 * synchronously: see python/net-channel.ts). Exits with the interpreter thread; the host closing
 * stdin ends both.
 */
function launch(): void {
  const { port1, port2 } = new MessageChannel();
  const net = new MessageChannel();
  const netSignal = new Int32Array(new SharedArrayBuffer(4));
  const thread = new Worker(new URL(import.meta.url), {
    argv: process.argv.slice(2),
    workerData: { port: port2, netPort: net.port2, netSignal: netSignal.buffer },
    transferList: [port2, net.port2],
    resourceLimits: { stackSizeMb: INTERPRETER_STACK_MB, maxOldGenerationSizeMb: INTERPRETER_HEAP_MB },
  });
  thread.on("error", (e) => fatal(`interpreter thread failed: ${String(e?.stack ?? e)}`));
  thread.on("exit", (code) => process.exit(code));
  port1.once("message", (m: unknown) => {
    if (!isStdinHandover(m)) return fatal("the interpreter thread sent something other than stdin");
    port1.unref();
    const rest = Buffer.from(m.stdinRest.buffer, m.stdinRest.byteOffset, m.stdinRest.byteLength);
    readHostFrames((msgs) => {
      const others = msgs.filter((msg) => {
        if ((msg as { type?: unknown }).type !== "fetchResult") return true;
        net.port1.postMessage(msg);
        Atomics.add(netSignal, 0, 1);
        Atomics.notify(netSignal, 0);
        return false;
      });
      if (others.length > 0) port1.postMessage(others);
    }, rest);
  });
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
  // The interrupt thread starts while this thread loads the engine (the snapshot is read during the restore: python/snapshot-load.ts).
  const words = new Int32Array(new SharedArrayBuffer(4 * INTERRUPT_WORDS)); // see beginRun
  const interrupter = startInterrupter(words);
  const py = await boot(pyodideDir, snapshotFile, false);
  harden(py);
  const { port, netPort, netSignal } = workerData as { port: MessagePort; netPort: MessagePort; netSignal: SharedArrayBuffer };
  const session = new PythonSession(py, hooks, words, flag === "warm", netInbox(netPort, new Int32Array(netSignal)));
  await session.start(interrupter);
  const handle = (m: unknown) => {
    try {
      session.handle(m as HostMessage);
    } catch (e) {
      fatal(`request failed: ${String((e as Error)?.stack ?? e)}`);
    }
  };
  // Relayed by the main thread, once stdin was handed to it.
  port.on("message", (msgs: unknown[]) => msgs.forEach(handle));
  serveStdinDirect(handle, grantsNetwork, (rest) => port.postMessage({ stdinRest: rest } satisfies StdinHandover));
}

/** The interpreter thread's end of the answers' port: taken synchronously, waited for on `signal`. */
function netInbox(port: MessagePort, signal: Int32Array): NetInbox {
  let seen = Atomics.load(signal, 0);
  return {
    take: () => receiveMessageOnPort(port)?.message as unknown,
    wait: (ms) => {
      Atomics.wait(signal, 0, seen, ms);
      seen = Atomics.load(signal, 0);
    },
  };
}

if (isMainThread) launch();
else main().catch((e: unknown) => fatal(`worker failed to start: ${String((e as Error)?.stack ?? e)}`));
