// A small QMP (QEMU Machine Protocol) client over a connected Unix socket: capabilities
// handshake, one command at a time with its answer matched in order, events to a listener.
// QMP is how the host controls QEMU; the guest console is never parsed for control.
import type { Socket } from "node:net";
import { WorkerCrashedError } from "../../errors.js";

const MAX_LINE = 1 << 20;

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

interface Waiter {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient {
  onEvent: ((e: QmpEvent) => void) | undefined;
  private buf = "";
  private readonly waiters: Waiter[] = [];
  private greeted: Waiter | undefined;
  private failure: Error | undefined;
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(private readonly sock: Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => this.onData(d));
    sock.on("close", () => this.fail(new WorkerCrashedError("QEMU closed its QMP socket")));
    sock.on("error", (e) => this.fail(new WorkerCrashedError(`QMP socket failed: ${e.message}`)));
  }

  /** Wrap a connected socket: wait for QEMU's greeting and negotiate capabilities. */
  static async open(sock: Socket): Promise<QmpClient> {
    const c = new QmpClient(sock);
    await new Promise((resolve, reject) => {
      c.greeted = { resolve, reject };
    });
    await c.execute("qmp_capabilities");
    return c;
  }

  /** Run one QMP command; resolves with its `return` value, rejects with its `error`. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const run = () =>
      new Promise<T>((resolve, reject) => {
        if (this.failure) return reject(this.failure);
        this.waiters.push({ resolve: resolve as (v: unknown) => void, reject });
        this.sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
      });
    const p = this.chain.then(run, run);
    this.chain = p.catch(() => undefined);
    return p;
  }

  close(): void {
    this.sock.destroy();
  }

  unref(): void {
    this.sock.unref();
  }

  ref(): void {
    this.sock.ref();
  }

  private onData(d: string): void {
    this.buf += d;
    if (this.buf.length > MAX_LINE && !this.buf.includes("\n")) return this.fail(new WorkerCrashedError("QMP sent an over-long line"));
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return this.fail(new WorkerCrashedError("QMP sent a line that is not JSON"));
      }
      if ("QMP" in msg) {
        this.greeted?.resolve(undefined);
        this.greeted = undefined;
      } else if ("event" in msg) {
        this.onEvent?.(msg as unknown as QmpEvent);
      } else if ("return" in msg) {
        this.waiters.shift()?.resolve(msg.return);
      } else if ("error" in msg) {
        const err = msg.error as { class?: string; desc?: string };
        this.waiters.shift()?.reject(new WorkerCrashedError(`QMP error: ${err.class ?? "?"}: ${err.desc ?? ""}`));
      }
    }
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    this.greeted?.reject(e);
    for (const w of this.waiters.splice(0)) w.reject(e);
  }
}
