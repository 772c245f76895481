// Pieces every worker process shares, whatever engine it runs: framed output to the host, the
// seeded entropy stream, the virtual clock's origin, the interrupter thread, and the idle wait a
// pooled worker does before it reports ready. Imports only leaves.
import fs from "node:fs";
import { createCipheriv, createHash } from "node:crypto";
import { Worker } from "node:worker_threads";
import { encodeFrame } from "../protocol/frames.js";

/** Virtual clock: starts here (2026-01-01T00:00:00Z) and advances this much per read. */
export const VIRTUAL_EPOCH_MS = 1_767_225_600_000;
export const VIRTUAL_TICK_MS = 1;

/** The worker's own clock, taken before any configuration replaces performance.now. */
export const realNow = performance.now.bind(performance);

/** While set (during warm-up), frames are built but not written. */
let muted = false;

export function setMuted(on: boolean): void {
  muted = on;
}

/** Write one frame to the host. Synchronous: the main thread may be busy inside the guest. */
export function send(message: unknown): void {
  const frame = encodeFrame(message);
  if (muted) return;
  let off = 0;
  while (off < frame.length) {
    try {
      off += fs.writeSync(1, frame, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
      process.exit(70); // host went away
    }
  }
}

export function fatal(message: string): never {
  try {
    send({ type: "fatal", message: message.slice(0, 60_000) });
  } finally {
    process.exit(70);
  }
}

/**
 * The sandbox's entropy: an AES-256-CTR keystream keyed by the seed. Fast, the same bytes for the
 * same seed on every machine, and as unpredictable as the seed is secret.
 */
export function seededRng(seed: number): (view: Uint8Array) => void {
  const key = createHash("sha256").update(`agentbox-seed:${seed}`).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return (view) => {
    const out = cipher.update(Buffer.alloc(view.length));
    view.set(out);
  };
}

/** Length of the shared interrupt words: [signal, reason, current run id, pending run id, pending reason]. */
export const INTERRUPT_WORDS = 5;

/**
 * Mark run `id` as the one in progress. An interrupt the host sent before the run began (its
 * deadline or abort raced the start) waits in the pending words and takes effect now. Order
 * matters: the interrupter writes pending, then reads the current id; this writes the current id,
 * then reads pending — so at least one of the two sees the other and the interrupt is not lost.
 */
export function beginRun(words: Int32Array, id: number): void {
  Atomics.store(words, 0, 0);
  Atomics.store(words, 1, 0);
  Atomics.store(words, 2, id);
  if (Atomics.load(words, 3) === id) {
    Atomics.store(words, 1, Atomics.load(words, 4));
    Atomics.store(words, 0, 2);
  }
}

/**
 * Start the interrupter thread on the control pipe (fd 3); it flips `words` (see interrupter.ts).
 * Resolves once it listens: a run must never start without its interrupter.
 */
export function startInterrupter(words: Int32Array): Promise<void> {
  const url = new URL("./interrupter.js", import.meta.url);
  const t = new Worker(url, { workerData: { sab: words.buffer, fd: 3 } });
  t.unref();
  t.on("error", (e) => fatal(`interrupter thread failed: ${e.message}`));
  return new Promise((resolve) => t.once("message", () => resolve()));
}

/**
 * Wait until the process is idle. After warm-up, V8 compiles the hot Wasm functions with its
 * optimising tier on helper threads for a few hundred ms; a pooled worker that reported ready
 * before that finished would spend its first request competing with it for the CPU. Measured by
 * the process's own CPU time (all threads), so it needs no V8 internals.
 */
export async function settle(maxMs = 3000, windowMs = 20): Promise<void> {
  const deadline = realNow() + maxMs;
  let quietWindows = 0;
  while (quietWindows < 2 && realNow() < deadline) {
    const cpu0 = process.cpuUsage();
    const t0 = realNow();
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const used = process.cpuUsage(cpu0);
    const busyMs = (used.user + used.system) / 1000;
    quietWindows = busyMs < 0.15 * (realNow() - t0) ? quietWindows + 1 : 0;
  }
}
