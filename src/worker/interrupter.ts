// A thread inside the worker process whose only job is to turn requests on the control pipe
// (fd 3) into Pyodide's interrupt signal. The main thread is busy inside Python while a run is in
// progress, so only another thread can flip the shared interrupt word while it runs.
// A request is 5 bytes: a reason byte and the run id (uint32 LE). A request for a run that has
// already ended is dropped, so a late timeout never interrupts the next run.
import fs from "node:fs";
import { workerData } from "node:worker_threads";

const { sab, fd } = workerData as { sab: SharedArrayBuffer; fd: number };
const words = new Int32Array(sab); // [signal, reason, current run id]
const buf = Buffer.alloc(5 * 64);
let carry = Buffer.alloc(0);

function pump(): void {
  fs.read(fd, buf, 0, buf.length, null, (err, n) => {
    if (err || n === 0) return; // host closed the pipe: the process is going away
    let data = Buffer.concat([carry, buf.subarray(0, n)]);
    while (data.length >= 5) {
      const reason = data[0]!;
      const runId = data.readUInt32LE(1);
      data = data.subarray(5);
      if (runId !== 0 && Atomics.load(words, 2) === runId) {
        Atomics.store(words, 1, reason);
        Atomics.store(words, 0, 2); // 2 = SIGINT: Python raises KeyboardInterrupt at its next check
      }
    }
    carry = Buffer.from(data);
    pump();
  });
}
pump();
