// Pieces every worker process shares, whatever engine it runs: framed output to the host, the
// seeded entropy stream, the virtual clock's origin, the interrupter thread, and the idle wait a
// pooled worker does before it reports ready. Imports only leaves.
import { createCipheriv, createHash } from "node:crypto";
import net from "node:net";
import { Worker } from "node:worker_threads";
import { FrameDecoder } from "../protocol/frames.js";
import { OutputTail, OUTPUT_FRAME_CHARS, TAIL_BYTES, writeFrameLocked } from "./output-tail.js";

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

/** Output not yet sent, shared with the interrupter thread (see output-tail.ts). */
const tail = new OutputTail();

/** Write one frame to the host. Synchronous: the main thread may be busy inside the guest. */
export function send(message: unknown): void {
  if (muted) return;
  tail.lock();
  try {
    tail.flush(); // output that waits goes first: frames keep the order the guest wrote in
    writeFrameLocked(message);
  } finally {
    tail.unlock();
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
 * Read the host's frames on stdin (the main thread's relay): `onMessages` gets each chunk's
 * complete messages (not yet schema-checked); a malformed frame is fatal; the host closing stdin
 * ends the worker. `first`: bytes of the stream another reader took but did not decode (see
 * serveStdinDirect); they come before anything read here.
 */
export function readHostFrames(onMessages: (msgs: unknown[]) => void, first?: Buffer): void {
  const decoder = new FrameDecoder();
  const take = (chunk: Buffer) => {
    let msgs: unknown[];
    try {
      msgs = decoder.push(chunk);
    } catch (e) {
      return fatal(`bad frame from host: ${(e as Error).message}`);
    }
    if (msgs.length > 0) onMessages(msgs);
  };
  if (first && first.length > 0) take(first);
  process.stdin.on("data", take);
  process.stdin.on("end", () => process.exit(0));
}

/** The message a thread that read stdin itself posts to the main thread to hand it over: the bytes it read but did not decode. */
export interface StdinHandover {
  stdinRest: Uint8Array;
}

export function isStdinHandover(m: unknown): m is StdinHandover {
  return typeof m === "object" && m !== null && (m as { stdinRest?: unknown }).stdinRest instanceof Uint8Array;
}

/** A configure granting network: from it on, the worker's main thread relays the host's frames (see serveStdinDirect). */
export function grantsNetwork(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { type?: unknown }).type === "configure" && (m as { network?: unknown }).network != null;
}

/**
 * The engine thread reads the host's frames from fd 0 itself, on its own event loop, and hands
 * each message to `handle` in order: no hop through the main thread (which cost a pooled sandbox's
 * first request a thread wake-up per frame). A guest's run blocks this thread, so frames sent
 * meanwhile wait in the pipe (interrupts come on fd 3, to the interrupter thread).
 *
 * Before the first message `relayFrom(m)` accepts (a configure with a network grant: a run then
 * blocks waiting for the host's fetch answers, which only a thread that is free can read), this
 * thread stops reading and `relay` gets every byte it read past that message's frame (the rest of
 * its decoder, a frame read in part, and what the socket had buffered) for the main thread to
 * decode first; `m` and the messages already decoded with it are still handled here, in order.
 * fd 0 is not closed (libuv never closes fds 0-2), so the main thread opens it again.
 */
export function serveStdinDirect(handle: (m: unknown) => void, relayFrom: (m: unknown) => boolean, relay: (rest: Buffer) => void): void {
  const decoder = new FrameDecoder();
  const stdin = new net.Socket({ fd: 0, readable: true, writable: false });
  let direct = true;
  const onData = (chunk: Buffer) => {
    let msgs: unknown[];
    try {
      msgs = decoder.push(chunk);
    } catch (e) {
      return fatal(`bad frame from host: ${(e as Error).message}`);
    }
    for (const m of msgs) {
      if (direct && relayFrom(m)) {
        direct = false;
        stdin.off("data", onData);
        stdin.off("end", onEnd);
        stdin.pause();
        const rest = [decoder.unread()];
        for (let c = stdin.read() as Buffer | null; c !== null; c = stdin.read() as Buffer | null) rest.push(c);
        stdin.destroy();
        relay(Buffer.concat(rest));
      }
      handle(m);
    }
  };
  const onEnd = () => process.exit(0);
  stdin.on("data", onData);
  stdin.on("end", onEnd);
  stdin.on("error", (e) => fatal(`reading the host's frames failed: ${e.message}`));
}

/**
 * Start the interrupter thread on the control pipe (fd 3); it flips `words` (see interrupter.ts).
 * Resolves once it listens: a run must never start without its interrupter.
 */
export function startInterrupter(words: Int32Array): Promise<void> {
  const url = new URL("./interrupter.js", import.meta.url);
  const t = new Worker(url, { workerData: { sab: words.buffer, tail: tail.sab, fd: 3 } });
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

// ---------------------------------------------------------------------------------------------
// Guest output: the output limit enforced at the source, and batching into frames.

const OUTPUT_FLUSH_BYTES = 32 * 1024;
const OUTPUT_FLUSH_MS = 20;
/** Interrupt reason the worker uses on itself when the guest floods its output. */
export const REASON_OUTPUT = 100;

/**
 * One run's stdout/stderr on its way to the host. The first output of a run is sent at once (a
 * caller streaming it sees the run is alive); after that, writes are coalesced for up to 20 ms or
 * 32 KB. `tick()` lets a guest that blocks (sleeps, polls) still get what waits out.
 */
export class OutputBatcher {
  runId = 0;
  bytes = 0;
  cap = Infinity;
  hit = false;
  private readonly encoder = new TextEncoder();
  private lastFlush = 0;
  private sentAny = false;

  /** `words`: the interrupt words; the guest is stopped when it passes the cap. */
  constructor(private readonly words: Int32Array) {}

  start(runId: number, cap: number): void {
    this.runId = runId;
    this.bytes = 0;
    this.cap = cap;
    this.hit = false;
    this.sentAny = false;
    this.lastFlush = realNow();
  }

  /** Bytes that may still be written. */
  get room(): number {
    return Math.max(0, this.cap - this.bytes);
  }

  /** False when nothing more is taken (no run, or the cap was hit). */
  get open(): boolean {
    return this.runId !== 0 && !this.hit;
  }

  /** Count `n` more bytes; returns how many fit. Past the cap the guest is interrupted. */
  admit(n: number): number {
    if (this.bytes + n <= this.cap) {
      this.bytes += n;
      return n;
    }
    const fit = this.room;
    this.bytes += fit;
    this.hit = true;
    Atomics.store(this.words, 1, REASON_OUTPUT);
    Atomics.store(this.words, 0, 2); // interrupt the guest: it is flooding
    return fit;
  }

  /** Queue text already admitted. It waits in the shared tail until a flush sends it. */
  push(stream: "stdout" | "stderr", text: string): void {
    if (muted || text.length === 0) return;
    const data = this.encoder.encode(text);
    tail.lock();
    try {
      const waiting = tail.length;
      if (waiting > 0 && (tail.owner.stream !== stream || tail.owner.runId !== this.runId || waiting + data.length > TAIL_BYTES)) tail.flush();
      if (data.length > TAIL_BYTES) {
        for (let i = 0; i < text.length; i += OUTPUT_FRAME_CHARS) writeFrameLocked({ type: "output", id: this.runId, stream, data: text.slice(i, i + OUTPUT_FRAME_CHARS) });
        this.sentOutput();
        return;
      }
      tail.append(this.runId, stream, data);
      if (!this.sentAny || tail.length >= OUTPUT_FLUSH_BYTES || realNow() - this.lastFlush >= OUTPUT_FLUSH_MS || this.hit) {
        tail.flush();
        this.sentOutput();
      }
    } finally {
      tail.unlock();
    }
  }

  /** Flush what waits if the last flush is old enough. */
  tick(): void {
    if (realNow() - this.lastFlush >= OUTPUT_FLUSH_MS) this.flush();
  }

  flush(): void {
    tail.lock();
    try {
      if (tail.length > 0) {
        tail.flush();
        this.sentOutput();
      }
      this.lastFlush = realNow();
    } finally {
      tail.unlock();
    }
  }

  private sentOutput(): void {
    this.sentAny = true;
    this.lastFlush = realNow();
  }

  end(): void {
    this.flush();
    this.runId = 0;
  }
}

/** The longest prefix of `s` that fits in `bytes` bytes of UTF-8, never splitting a character. */
export function cutUtf8(s: string, bytes: number): string {
  const b = Buffer.from(s).subarray(0, Math.max(0, bytes));
  return new TextDecoder().decode(b).replace(/\uFFFD$/, "");
}
