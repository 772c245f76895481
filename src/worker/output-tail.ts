// The output a worker has taken from the guest but not yet sent lives in shared memory, so that
// it reaches the host even when the main thread never comes back from the guest: a run that
// ignores its interrupt is killed by the host, and output coalesced for a few milliseconds
// before the guest went into its loop would die with the process. The main thread appends and
// flushes under a lock; after an interrupt the interrupter thread also drains it (see
// interrupter.ts). Every frame the process writes takes the same lock, so frames never interleave.
import fs from "node:fs";
import { encodeFrame } from "../protocol/frames.js";

/** Bytes of output that can wait unsent; more is flushed first. */
export const TAIL_BYTES = 256 * 1024;
/** Longest `data` string in one output frame. */
export const OUTPUT_FRAME_CHARS = 256 * 1024;
const HEADER_WORDS = 5; // [lock, run id, stream (1 stdout, 2 stderr), length in bytes, change count]

export class OutputTail {
  readonly sab: SharedArrayBuffer;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly decoder = new TextDecoder();

  constructor(sab: SharedArrayBuffer = new SharedArrayBuffer(HEADER_WORDS * 4 + TAIL_BYTES)) {
    this.sab = sab;
    this.words = new Int32Array(sab, 0, HEADER_WORDS);
    this.bytes = new Uint8Array(sab, HEADER_WORDS * 4);
  }

  lock(): void {
    while (Atomics.compareExchange(this.words, 0, 0, 1) !== 0) Atomics.wait(this.words, 0, 1, 1);
  }

  /** Take the lock if it is free (the interrupter never waits for the main thread). */
  tryLock(): boolean {
    return Atomics.compareExchange(this.words, 0, 0, 1) === 0;
  }

  unlock(): void {
    Atomics.store(this.words, 0, 0);
    Atomics.notify(this.words, 0);
  }

  /** Bytes waiting (call with the lock held). */
  get length(): number {
    return Atomics.load(this.words, 3);
  }

  /** Changes so far (appends and flushes): unchanged between two looks means the output waited. */
  get changes(): number {
    return Atomics.load(this.words, 4);
  }

  /** Run and stream of what waits (call with the lock held). */
  get owner(): { runId: number; stream: "stdout" | "stderr" } {
    return { runId: Atomics.load(this.words, 1), stream: Atomics.load(this.words, 2) === 2 ? "stderr" : "stdout" };
  }

  /** Append `data` for run `runId` (lock held; the caller flushed first when stream or run differ or it would not fit). */
  append(runId: number, stream: "stdout" | "stderr", data: Uint8Array): void {
    const len = this.length;
    this.bytes.set(data, len);
    Atomics.store(this.words, 1, runId);
    Atomics.store(this.words, 2, stream === "stderr" ? 2 : 1);
    Atomics.store(this.words, 3, len + data.length);
    Atomics.add(this.words, 4, 1);
  }

  /** Send what waits as output frames and empty the tail (lock held). */
  flush(): void {
    const len = this.length;
    if (len === 0) return;
    const { runId, stream } = this.owner;
    const text = this.decoder.decode(this.bytes.subarray(0, len));
    Atomics.store(this.words, 3, 0);
    Atomics.add(this.words, 4, 1);
    for (let i = 0; i < text.length; i += OUTPUT_FRAME_CHARS) {
      writeFrameLocked({ type: "output", id: runId, stream, data: text.slice(i, i + OUTPUT_FRAME_CHARS) });
    }
  }
}

/** Write one frame to the host (fd 1) with the frame lock already held. */
export function writeFrameLocked(message: unknown): void {
  const frame = encodeFrame(message);
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
