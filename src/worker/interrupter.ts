// A thread inside the worker process whose only job is to turn requests on the control pipe
// (fd 3) into Pyodide's interrupt signal. The main thread is busy inside Python while a run is in
// progress, so only another thread can flip the shared interrupt word while it runs.
// A request is 5 bytes: a reason byte and the run id (uint32 LE). A request for a run that has
// already ended never interrupts a later one (run ids only grow); a request for a run that has
// not started yet is kept and applied when it starts.
// Once a run is interrupted it also drains the output that waits in the shared tail: a guest
// that ignores the interrupt is killed by the host, and what it printed must reach the host first.
import net from "node:net";
import { parentPort, workerData } from "node:worker_threads";
import { OutputTail } from "./output-tail.js";

const { sab, tail: tailSab, fd } = workerData as { sab: SharedArrayBuffer; tail: SharedArrayBuffer; fd: number };
const words = new Int32Array(sab); // [signal, reason, current run id, pending run id, pending reason]
const tail = new OutputTail(tailSab);
let carry = Buffer.alloc(0);

/** How often, and for how long, an interrupted run's waiting output is drained. */
const DRAIN_EVERY_MS = 10;
const DRAIN_FOR_MS = 60_000;
let draining: NodeJS.Timeout | undefined;

/** Send run `runId`'s waiting output while that run (or its start) is still current. */
function drain(runId: number): void {
  clearInterval(draining);
  const until = Date.now() + DRAIN_FOR_MS;
  const once = () => {
    const current = Atomics.load(words, 2);
    if (Date.now() > until || (current !== runId && current > runId)) return clearInterval(draining);
    if (!tail.tryLock()) return; // the main thread is writing: it is not stuck
    try {
      if (tail.length > 0 && tail.owner.runId === runId) tail.flush();
    } finally {
      tail.unlock();
    }
  };
  once(); // at once: the host's grace period may be short and this thread slow to be scheduled
  draining = setInterval(once, DRAIN_EVERY_MS);
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
    drain(runId);
  }
  carry = Buffer.from(data);
});

// Output that waited a whole tick unsent while the guest is busy (a loop that neither writes nor
// reads a clock, so the main thread never flushes) is sent from here: callers see it stream.
const STALE_OUTPUT_MS = 25;
let seen = -1;
setInterval(() => {
  const changes = tail.changes;
  if (changes === seen && tail.length > 0 && tail.tryLock()) {
    try {
      if (tail.changes === changes && tail.length > 0) tail.flush();
    } finally {
      tail.unlock();
    }
  }
  seen = tail.changes;
}, STALE_OUTPUT_MS);

// The worker announces itself ready only after this: a run must never start without its interrupter.
parentPort?.postMessage("listening");
