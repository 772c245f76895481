// Process-wide state of a JavaScript worker that more than one concern reads: the interrupt words
// shared with the interrupter thread, the sandbox clock, and the Wasm memory cap with its growth
// hook. One sandbox per process, so these are module singletons, reset by each configure.
import { INTERRUPT_WORDS, VIRTUAL_EPOCH_MS, VIRTUAL_TICK_MS } from "../common.js";

/** [signal, reason, current run id, pending run id, pending reason]: see beginRun in common.ts. */
export const words = new Int32Array(new SharedArrayBuffer(4 * INTERRUPT_WORDS));

/** True while the run in progress has been told to stop. */
export function stopRequested(): boolean {
  return Atomics.load(words, 0) !== 0;
}

export const clock = { virtual: false, virtualMs: VIRTUAL_EPOCH_MS };

export function virtualNow(): number {
  clock.virtualMs += VIRTUAL_TICK_MS;
  return clock.virtualMs;
}

/** The guest's Wasm memory cap (limits.memoryMb), enforced where Emscripten grows the memory. */
export const memCap = { bytes: 256 * 1024 * 1024, hit: false };
const WASM_PAGE = 65536;

/** The slice of the WebAssembly JS API used here (the project's TS lib has no DOM types). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
declare const WebAssembly: {
  Memory: new (d: { initial: number; maximum: number }) => WasmMemory;
};

/**
 * A Wasm memory whose growth stops at `memCap`. QuickJS's own malloc limit undercounts in this
 * build (no malloc_usable_size), so the cap is on the memory itself: Emscripten's heap growth calls
 * `grow` and treats a throw as "no memory", so QuickJS raises its out-of-memory error.
 */
export function cappedMemory(): WasmMemory {
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

/** After a run was stopped, the worker still calls into the guest (describe, show) until this (realNow ms; 0: no epilogue). */
export const epilogue = { untilMs: 0 };
