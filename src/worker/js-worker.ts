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
// writes its frames to stdout itself. This file is the process's two entry points; the sandbox
// itself is js/session.ts and the concerns it dispatches to (see docs/ARCHITECTURE.md).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { isMainThread, MessageChannel, Worker, workerData, type MessagePort } from "node:worker_threads";
import type { HostMessage } from "../protocol/messages.js";
import { fatal, grantsNetwork, isStdinHandover, readHostFrames, serveStdinDirect, startInterrupter, type StdinHandover } from "./common.js";
import type { Parse } from "./js-cell.js";
import type { Transform } from "./js/cell-runner.js";
import { HostInbox } from "./js/inbox.js";
import { JsSession } from "./js/session.js";
import { cappedMemory, words } from "./js/state.js";

declare const WebAssembly: { compile(bytes: Uint8Array): Promise<object> };

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
 * The main thread: starts the engine thread, which reads the host's frames itself (see
 * serveStdinDirect in common.ts) until a configure grants network. Then it hands stdin back, and
 * this thread reads the frames and passes them on a message port, bumping `wake` so the engine
 * thread can also wait for them synchronously while a run waits for fetch answers. Exits with the
 * engine thread.
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
  port1.once("message", (m: unknown) => {
    if (!isStdinHandover(m)) return fatal("the engine thread sent something other than stdin");
    port1.unref();
    const rest = Buffer.from(m.stdinRest.buffer, m.stdinRest.byteOffset, m.stdinRest.byteLength);
    readHostFrames((msgs) => {
      for (const msg of msgs) port1.postMessage(msg);
      Atomics.add(wake, 0, 1);
      Atomics.notify(wake, 0);
    }, rest);
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
  const session = new JsSession({ qjs, loadSucrase, parse, inbox: new HostInbox(port, new Int32Array(wake)) });
  await session.start(interrupter, flag === "warm");
  const handle = (m: unknown) => {
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
  };
  // Relayed by the main thread, once stdin was handed to it (fetch answers are taken from the
  // port synchronously too, while a run waits: see js/inbox.ts).
  port.on("message", handle);
  serveStdinDirect(handle, grantsNetwork, (rest) => port.postMessage({ stdinRest: rest } satisfies StdinHandover));
}

if (isMainThread) shell();
else engineMain().catch((e: unknown) => fatal(`worker failed to start: ${String((e as Error)?.stack ?? e)}`));
