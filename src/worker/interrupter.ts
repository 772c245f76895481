// A thread inside the worker process whose only job is to turn requests on the control pipe
// (fd 3) into Pyodide's interrupt signal. The main thread is busy inside Python while a run is in
// progress, so only another thread can flip the shared interrupt word while it runs.
// A request is 5 bytes: a reason byte and the run id (uint32 LE). A request for a run that has
// already ended never interrupts a later one (run ids only grow); a request for a run that has
// not started yet is kept and applied when it starts.
import net from "node:net";
import { parentPort, workerData } from "node:worker_threads";

const { sab, fd } = workerData as { sab: SharedArrayBuffer; fd: number };
const words = new Int32Array(sab); // [signal, reason, current run id, pending run id, pending reason]
let carry = Buffer.alloc(0);

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
  }
  carry = Buffer.from(data);
});

// The worker announces itself ready only after this: a run must never start without its interrupter.
parentPort?.postMessage("listening");
