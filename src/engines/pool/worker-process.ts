// Host side of one worker process: spawn, framed messages in and out, interrupts on the control
// pipe, hard kill, and the outer limits (memory by RSS, output bytes). Everything the worker says
// is checked against the protocol schema; a worker that breaks the protocol is killed.
import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { setPriority } from "node:os";
import type { Writable } from "node:stream";
import { AgentboxError, ProtocolError, WorkerCrashedError } from "../../errors.js";
import { encodeFrame, FrameDecoder, FrameError, PROTOCOL_VERSION } from "../../protocol/frames.js";
import type { DisplayResult } from "../../protocol/display.js";
import { workerMessageSchema, type HostMessage, type WorkerMessage } from "../../protocol/messages.js";
import { priorityRestoreRefused, spawnWorkerChild, takeEarlyWorker, type WorkerSpawnSpec } from "./spawn.js";

export type { WorkerSpawnSpec };

type Reply = Extract<WorkerMessage, { type: "reply" | "result" | "needsHeavy" }>;
type OutputListener = (stream: "stdout" | "stderr", data: string) => void;
type DisplayListener = (result: DisplayResult) => void;

const STDERR_KEEP_BYTES = 16 * 1024;
const PAGE_BYTES = 4096;
/** How long a killed worker's pending requests wait for its pipes to be read to the end. */
const DRAIN_AFTER_KILL_MS = 1000;

export class WorkerProcess {
  readonly child: ChildProcess;
  readonly ready: Promise<Extract<WorkerMessage, { type: "ready" }>>;
  private readonly pending = new Map<number, { resolve: (m: Reply) => void; reject: (e: Error) => void; onOutput?: OutputListener | undefined; onDisplay?: DisplayListener | undefined }>();
  private readonly decoder = new FrameDecoder();
  private stderrTail = "";
  private deathError: Error | undefined;
  private killReason: Error | undefined;
  private exited = false;
  private killTimer: NodeJS.Timeout | undefined;
  private readonly exitPromise: Promise<void>;
  private readyResolve!: (m: Extract<WorkerMessage, { type: "ready" }>) => void;
  private readyReject!: (e: Error) => void;
  private rssTimer: NodeJS.Timeout | undefined;
  private niced: boolean;
  /** Set by the engine while a run may use the network grant; a fetch without it breaks the protocol. */
  onFetch: ((m: Extract<WorkerMessage, { type: "fetch" }>) => void) | undefined;

  constructor(spec: WorkerSpawnSpec) {
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => undefined);
    // A worker started early for this very spec (the one-shot CLI's) is taken over; else one starts now.
    const early = takeEarlyWorker(spec);
    ({ child: this.child, niced: this.niced } = early ? { child: early, niced: false } : spawnWorkerChild(spec));
    this.exitPromise = new Promise((resolve) => this.child.once("exit", () => resolve()));
    this.child.stdout!.on("data", (chunk: Buffer) => this.onData(chunk));
    this.child.stderr!.on("data", (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString("utf8")).slice(-STDERR_KEEP_BYTES);
    });
    for (const s of [this.child.stdin, this.child.stdio[3]] as (Writable | null)[]) s?.on("error", () => undefined);
    this.child.on("error", (e) => this.onExit(new WorkerCrashedError(`worker failed to start: ${e.message}`, { cause: e })));
    // "close", not "exit": the pipes are read to the end first, so a killed worker's last output counts.
    this.child.on("close", (code, signal) => {
      const detail = this.stderrTail.trim().split("\n").slice(-5).join("\n");
      this.onExit(new WorkerCrashedError(`worker exited (${signal ?? `code ${code}`})${detail ? `: ${detail}` : ""}`));
    });
    if (early) this.ref(); // it waited unref'd
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return !this.exited && !this.killReason;
  }

  /** Why this worker can no longer serve, once it cannot. */
  get failure(): Error | undefined {
    return this.killReason ?? this.deathError;
  }

  /**
   * Back to normal CPU priority (a background worker taken from its pool), every thread of it.
   * Raising a priority needs CAP_SYS_NICE; without it the worker stays niced (it still runs,
   * below other processes) and later refills start at normal priority instead.
   */
  foreground(): void {
    if (!this.niced || this.child.pid === undefined) return;
    this.niced = false;
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${this.child.pid}/task`);
    } catch {
      return; // gone
    }
    for (const tid of tids) {
      try {
        setPriority(Number(tid), 0);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EACCES" || (e as { info?: { code?: string } }).info?.code === "EACCES") priorityRestoreRefused();
        // else the thread just ended
      }
    }
  }

  /** Keep the host process's event loop free of this worker (for idle pool workers). */
  unref(): void {
    this.child.unref();
    for (const s of [this.child.stdout, this.child.stderr, this.child.stdin, this.child.stdio[3]]) {
      (s as unknown as { unref?: () => void } | null)?.unref?.();
    }
  }

  ref(): void {
    this.child.ref();
    for (const s of [this.child.stdout, this.child.stderr, this.child.stdin, this.child.stdio[3]]) {
      (s as unknown as { ref?: () => void } | null)?.ref?.();
    }
  }

  /** Send a message and wait for the reply or result with the same id; its output and results go to the listeners as they come. */
  request(msg: HostMessage, onOutput?: OutputListener, onDisplay?: DisplayListener): Promise<Reply> {
    const failure = this.failure;
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => {
      this.pending.set(msg.id, { resolve, reject, onOutput, onDisplay });
      this.child.stdin!.write(encodeFrame(msg));
    });
  }

  /** Send a message that needs no answer (e.g. a fetch result); dropped once the worker has failed. */
  send(msg: HostMessage): void {
    if (this.failure) return;
    this.child.stdin!.write(encodeFrame(msg));
  }

  /** Ask the worker to interrupt run `runId` (KeyboardInterrupt inside Python). */
  interrupt(runId: number, reason: number): void {
    const b = Buffer.alloc(5);
    b[0] = reason;
    b.writeUInt32LE(runId >>> 0, 1);
    (this.child.stdio[3] as Writable | null)?.write(b);
  }

  /**
   * Kill the process now; pending requests fail with `reason` once what the worker wrote before
   * it died has been read (its output reaches the caller first), or after DRAIN_AFTER_KILL_MS.
   */
  kill(reason: Error): void {
    if (!this.killReason) this.killReason = reason;
    if (this.exited) return this.failPending(reason);
    this.child.kill("SIGKILL");
    this.killTimer ??= setTimeout(() => this.failPending(this.killReason ?? reason), DRAIN_AFTER_KILL_MS);
  }

  /** Resolves once the process has exited. */
  exited$(): Promise<void> {
    return this.exitPromise;
  }

  /** Poll the worker's resident memory while `active`; kill with `makeError()` above `capBytes`. */
  watchRss(capBytes: number, makeError: () => AgentboxError, intervalMs = 50): void {
    this.stopRssWatch();
    const pid = this.child.pid;
    if (pid === undefined || process.platform !== "linux") return;
    this.rssTimer = setInterval(() => {
      let rss: number;
      try {
        rss = Number(readFileSync(`/proc/${pid}/statm`, "utf8").split(" ")[1]) * PAGE_BYTES;
      } catch {
        return;
      }
      if (rss > capBytes) this.kill(makeError());
    }, intervalMs);
    this.rssTimer.unref();
  }

  stopRssWatch(): void {
    if (this.rssTimer) clearInterval(this.rssTimer);
    this.rssTimer = undefined;
  }

  private onData(chunk: Buffer): void {
    if (this.killReason) return this.onDataAfterKill(chunk);
    let raw: unknown[];
    try {
      raw = this.decoder.push(chunk);
    } catch (e) {
      return this.kill(new ProtocolError(`worker sent a malformed frame: ${(e as FrameError).message}`));
    }
    for (const r of raw) {
      if (this.killReason) return; // a frame before this one ended the worker
      const parsed = workerMessageSchema.safeParse(r);
      if (!parsed.success) {
        return this.kill(new ProtocolError(`worker sent an invalid message: ${parsed.error.issues[0]?.message ?? "schema mismatch"}`));
      }
      this.dispatch(parsed.data);
    }
  }

  /** A killed worker's last frames: its output is still delivered; nothing else is acted on. */
  private onDataAfterKill(chunk: Buffer): void {
    let raw: unknown[];
    try {
      raw = this.decoder.push(chunk);
    } catch {
      return;
    }
    for (const r of raw) {
      const parsed = workerMessageSchema.safeParse(r);
      if (!parsed.success) return;
      if (parsed.data.type === "output") this.dispatch(parsed.data);
    }
  }

  private dispatch(m: WorkerMessage): void {
    switch (m.type) {
      case "ready":
        if (m.v !== PROTOCOL_VERSION) return this.kill(new ProtocolError(`worker speaks protocol v${m.v}, host v${PROTOCOL_VERSION}`));
        return this.readyResolve(m);
      case "output":
        this.pending.get(m.id)?.onOutput?.(m.stream, m.data);
        return;
      case "display":
        this.pending.get(m.id)?.onDisplay?.(m.result);
        return;
      case "fatal":
        return this.kill(new WorkerCrashedError(`worker failed: ${m.message}`));
      case "fetch":
        if (!this.onFetch) return this.kill(new ProtocolError("worker sent a fetch request outside a run with a network grant"));
        return this.onFetch(m);
      case "reply":
      case "result":
      case "needsHeavy": {
        const p = this.pending.get(m.id);
        if (!p) return this.kill(new ProtocolError(`worker answered unknown request ${m.id}`));
        this.pending.delete(m.id);
        p.resolve(m);
      }
    }
  }

  private onExit(err: Error): void {
    if (this.exited) return;
    this.exited = true;
    this.stopRssWatch();
    this.deathError = err;
    const reason = this.killReason ?? err;
    this.readyReject(reason);
    this.failPending(reason);
  }

  private failPending(reason: Error): void {
    clearTimeout(this.killTimer);
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(reason);
    this.readyReject(reason);
  }
}
