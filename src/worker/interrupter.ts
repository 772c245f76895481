// A thread inside the worker process that turns requests on the control pipe
// (fd 3) into Pyodide's interrupt signal. The main thread is busy inside Python while a run is in
// progress, so only another thread can flip the shared interrupt word while it runs.
// A request is 5 bytes: a reason byte and the run id (uint32 LE). A request for a run that has
// already ended never interrupts a later one (run ids only grow); a request for a run that has
// not started yet is kept and applied when it starts.
// It also sends the output that waits in the shared tail when a run is interrupted (a guest that
// ignores the interrupt is killed by the host, and what it printed must reach the host first) and
// whenever output has waited a whole tick while the guest is busy.
import net from "node:net";
import { parentPort, workerData } from "node:worker_threads";
import { OutputTail } from "./output-tail.js";

const { sab, tail: tailSab, fd } = workerData as { sab: SharedArrayBuffer; tail: SharedArrayBuffer; fd: number };
const words = new Int32Array(sab); // [signal, reason, current run id, pending run id, pending reason]
const tail = new OutputTail(tailSab);
let carry = Buffer.alloc(0);

/** Send the output waiting in the shared tail, unless the main thread holds it (then it is not stuck). */
function flushWaiting(unchangedSince?: number): void {
  if (tail.length === 0 || !tail.tryLock()) return;
  try {
    if (tail.length > 0 && (unchangedSince === undefined || tail.changes === unchangedSince)) tail.flush();
  } finally {
    tail.unlock();
  }
}

// A socket (epoll), not fs.read (thread pool): a read pending in the pool would hold up process exit.
const control = new net.Socket({ fd, readable: true, writable: false });
control.on("error", () => undefined);
control.on("data", (chunk: Buffer) => {
  let data = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
  while (data.length >= 5) {
    const reason = data[0]!;
    const runId = data.readUInt32LE(1);
    data = data.subarray(5);
    if (runId === 0) continue;
    // Pending first (see beginRun in common.ts): a run that has not started yet finds it there.
    Atomics.store(words, 4, reason);
    Atomics.store(words, 3, runId);
    if (Atomics.load(words, 2) === runId) {
      Atomics.store(words, 1, reason);
      Atomics.store(words, 0, 2); // 2 = SIGINT: Python raises KeyboardInterrupt at its next check
    }
    // At once: the host's grace period may be short, and a guest that ignores the interrupt never flushes.
    flushWaiting();
  }
  carry = Buffer.from(data);
});

// Output that waited a whole tick unsent while the guest is busy (a loop that neither writes nor
// reads a clock, so the main thread never flushes) is sent from here: callers see it stream.
const STALE_OUTPUT_MS = 25;
let seen = -1;
setInterval(() => {
  if (tail.changes === seen) flushWaiting(seen);
  seen = tail.changes;
}, STALE_OUTPUT_MS);

// The worker announces itself ready only after this: a run must never start without its interrupter.
parentPort?.postMessage("listening");
