// The engine thread's view of host messages: delivered by event while the worker is idle, taken
// synchronously (receiveMessageOnPort plus a wake word the relaying main thread bumps) while a run
// waits for fetch answers.
import { receiveMessageOnPort, type MessagePort } from "node:worker_threads";

export class HostInbox {
  constructor(
    readonly port: MessagePort,
    private readonly wake: Int32Array,
  ) {}

  /** The next queued message, waiting up to `waitMs` for one (0: do not wait). */
  take(waitMs: number): unknown {
    const seen = Atomics.load(this.wake, 0);
    const m = receiveMessageOnPort(this.port);
    if (m || waitMs <= 0) return m?.message;
    Atomics.wait(this.wake, 0, seen, waitMs);
    return receiveMessageOnPort(this.port)?.message;
  }
}
