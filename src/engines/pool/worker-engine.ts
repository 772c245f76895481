// The host half of a nano-tier engine, shared by every engine whose guest runs in a worker
// process (Python, JavaScript): it configures a worker, runs code with the outer half of every
// limit (deadline → interrupt → grace → hard kill, RSS cap, output cap), and maps what the worker
// answers onto the Engine interface. A worker serves one sandbox and is never reused.
import {
  AbortedError,
  FileSystemError,
  FileSystemQuotaError,
  MemoryLimitError,
  OutputLimitError,
  ProtocolError,
  TimeoutError,
  withPartialResult,
  WorkerCrashedError,
  type LimitName,
} from "../../errors.js";
import type { NetworkGrant } from "../../policy/network.js";
import type { NanoLimits as Limits } from "../../policy/options.js";
import type { SecretSet } from "../../policy/secrets.js";
import { ResultGate, type DisplayResult } from "../../protocol/display.js";
import { INTERRUPT_REASON, type DirEntry, type HostMessage, type WorkerMessage } from "../../protocol/messages.js";
import type { Engine, EngineNetwork, EngineRunOptions, EngineRunResult, EngineSeries, EngineSeriesAnswer, EngineSeriesStep, NeedsHeavy } from "../engine.js";
import { seriesOneByOne } from "../series.js";
import { FetchBroker } from "./fetch-broker.js";
import type { WorkerProcess } from "./worker-process.js";

const MiB = 1024 * 1024;
/** RSS allowed above the Wasm memory cap: Node itself, the JS heap, file contents. */
const RSS_OVERHEAD_BYTES = 384 * MiB;
/** The worker cuts output at the limit; the host allows this much slack before it kills. */
const OUTPUT_SLACK_BYTES = 64 * 1024;

type Reply = Extract<WorkerMessage, { type: "reply" }>;
type RunAnswer = Extract<WorkerMessage, { type: "reply" | "result" | "needsHeavy" }>;

type FsRequest = Omit<Extract<HostMessage, { type: "fs" }>, "type" | "id">;

/** A request made ready to go: `send` puts it on the pipe, `settle` waits for (and checks) its answer. */
interface Prepared<T> {
  send(): Promise<RunAnswer>;
  settle(answer: () => Promise<RunAnswer>): Promise<T>;
}

/** The `fs` request of a host file change. */
function fsRequest(step: Extract<EngineSeriesStep, { kind: "write" | "remove" | "mkdir" }>): FsRequest {
  if (step.kind === "write") return { op: "write", path: step.path, data: Buffer.from(step.data.buffer, step.data.byteOffset, step.data.byteLength).toString("base64") };
  if (step.kind === "remove") return { op: "remove", path: step.path, recursive: true };
  return { op: "mkdir", path: step.path };
}

export type ConfigureMessage = Extract<HostMessage, { type: "configure" }>;

export class WorkerEngine implements Engine, EngineSeries {
  private nextId = 0;
  private closed: string | undefined;

  /** The host half of a network grant (nano sandboxes with `network`: JavaScript's fetch, Python's urllib). */
  private readonly broker: FetchBroker | undefined;

  protected constructor(
    private readonly worker: WorkerProcess,
    private readonly config: { limits: Limits; network?: NetworkGrant | undefined; secrets?: SecretSet | undefined },
  ) {
    // The secrets must be the set whose placeholders the guest's env holds (engines/registry.ts).
    this.broker = config.network ? new FetchBroker(config.network, config.secrets ? { secrets: config.secrets } : {}) : undefined;
  }

  /** The configure message for `limits` and the rest (id filled in by configure()). */
  static configureMessage(c: Omit<ConfigureMessage, "type" | "id" | "limits"> & { limits: Limits }): Omit<ConfigureMessage, "id"> {
    const { limits } = c;
    return {
      ...c,
      type: "configure",
      limits: { memoryBytes: limits.memoryMb * MiB, outputBytes: limits.outputBytes, vfsBytes: limits.vfsBytes, vfsFiles: limits.vfsFiles },
    };
  }

  /**
   * Send the worker its configuration. A started worker (`pooled` false): wait until it is ready
   * and for its answer, so a refusal fails the create; on failure the worker is ended. A pooled
   * worker, already ready: the configuration is sent and not waited for. The worker handles its
   * messages in order, so the first request goes out at once and saves a round trip; should the
   * worker refuse or die, the worker is killed with that reason and the request fails with it.
   */
  protected async configure(msg: Omit<ConfigureMessage, "id">, pooled = false): Promise<void> {
    if (pooled) {
      this.call({ ...msg, id: ++this.nextId }).catch((e: unknown) => {
        this.closed ??= (e as Error).message;
        this.worker.kill(e as Error);
      });
      return;
    }
    try {
      await this.worker.ready;
      await this.call({ ...msg, id: ++this.nextId });
    } catch (e) {
      await this.dispose("start failed");
      throw e;
    }
  }

  get closedReason(): string | undefined {
    return this.closed;
  }

  get pid(): number | undefined {
    return this.worker.pid;
  }

  /** The record of the guest's fetches; outlives the worker, so it can be read after a kill. */
  get network(): EngineNetwork | undefined {
    const b = this.broker;
    if (!b) return undefined;
    return { entries: () => b.log.entries(), watch: (l) => b.log.watch(l), placeholders: () => b.secrets.placeholders() };
  }

  async run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    return (await this.runCell(code, opts, false)) as EngineRunResult;
  }

  /**
   * Run a cell. With `nanoOnly` the worker may answer that the code needs the heavy tier instead
   * of running it (tier "auto"; Python workers); to any other run that answer breaks the protocol.
   */
  protected async runCell(code: string, opts: EngineRunOptions, nanoOnly: boolean): Promise<EngineRunResult | NeedsHeavy> {
    const run = this.prepareRun(code, opts, nanoOnly);
    return run.settle(() => run.send());
  }

  /**
   * A series of requests (EngineSeries): all sent to the worker together when the first one's turn
   * comes, so the worker handles them back to back with no round trip between them (replaying a
   * history and checking its files is one burst). Answers are consumed in order; each run keeps its
   * own limits, its time limit counted from when the request before it answered (the worker starts
   * it then). The first failure, or a throw from `each`, kills the worker: the requests after it
   * are already on the pipe and would run on a state nobody expects. A sandbox with a network
   * grant sends one request at a time (a fetch must name the run in progress, and a replayed
   * fetch's answer is not repeatable: nothing may run after the one that went wrong).
   */
  async series(steps: readonly EngineSeriesStep[], each: (index: number, answer: EngineSeriesAnswer) => void): Promise<{ done: number; pipelined: boolean }> {
    if (this.broker || steps.length <= 1) return seriesOneByOne(this, steps, each);
    const prepared = steps.map((s) => this.prepareStep(s));
    let sent: Promise<RunAnswer>[] = [];
    let done = 0;
    try {
      for (const [i, step] of prepared.entries()) {
        const answer = await step.settle(() => {
          // With the first request's limits running (as for a single one), every request goes out.
          if (i === 0) {
            sent = prepared.map((x) => x.send());
            for (const p of sent) p.catch(() => undefined); // each is awaited in its turn, unless the series ended first
          }
          return sent[i]!;
        });
        each(i, answer);
        done++;
      }
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      this.closed ??= `request ${done + 1} of a series failed: ${err.message}`;
      this.worker.kill(err);
      throw e;
    }
    return { done, pipelined: true };
  }

  /** One request of a series: `send` puts it on the pipe, `settle` holds its limits while its answer comes. */
  private prepareStep(step: EngineSeriesStep): Prepared<EngineSeriesAnswer> {
    switch (step.kind) {
      case "run": {
        const run = this.prepareRun(step.code, { timeoutMs: step.timeoutMs }, false);
        return { send: run.send, settle: async (answer) => ({ kind: "run", result: (await run.settle(answer)) as EngineRunResult }) };
      }
      case "reseed": {
        const r = this.prepareReseed(step.seed);
        return { send: r.send, settle: async (answer) => (await r.settle(answer), { kind: "done" }) };
      }
      case "write":
      case "remove":
      case "mkdir": {
        const fsStep = this.prepareFs(fsRequest(step));
        return { send: fsStep.send, settle: async (answer) => (await fsStep.settle(answer), { kind: "done" }) };
      }
      case "read":
      case "list":
      case "exists": {
        const q = this.prepareFs({ op: step.kind, path: step.path });
        // A query that is refused changed nothing: its error is its answer and the series goes on.
        return {
          send: q.send,
          settle: async (answer) => {
            let m: Reply;
            try {
              m = await q.settle(answer);
            } catch (e) {
              if (e instanceof FileSystemError) return { kind: "failed", error: e };
              throw e;
            }
            if (step.kind === "read") return { kind: "read", data: new Uint8Array(Buffer.from(m.data ?? "", "base64")) };
            if (step.kind === "list") return { kind: "list", entries: m.entries ?? [] };
            return { kind: "exists", exists: m.exists ?? false };
          },
        };
      }
    }
  }

  /** One run's state: `send` puts it on the pipe, `settle` holds its limits while its answer comes. */
  private prepareRun(code: string, opts: EngineRunOptions, nanoOnly: boolean): Prepared<EngineRunResult | NeedsHeavy> {
    const { limits } = this.config;
    const id = ++this.nextId;
    const w = this.worker;
    let stdout = "";
    let stderr = "";
    let outBytes = 0;
    const timers: NodeJS.Timeout[] = [];
    const hardStop = (err: Error) => {
      w.kill(err);
      this.closed ??= err.message;
    };
    let settled = false;
    const interruptThenKill = (reason: number, err: () => Error) => {
      w.interrupt(id, reason);
      // Once more half-way through the grace period (the worker ignores a second request for a run
      // that already ended): a guest that stopped then answers in time even had the first gone amiss.
      timers.push(setTimeout(() => w.interrupt(id, reason), limits.graceMs / 2));
      // At the deadline the kill waits one turn for I/O (setImmediate runs after the poll phase): a
      // host whose loop ran late reads an answer already in the pipe first, and that answer wins.
      timers.push(setTimeout(() => setImmediate(() => settled || hardStop(err())), limits.graceMs));
    };
    const onAbort = () => interruptThenKill(INTERRUPT_REASON.abort, () => new AbortedError("run aborted by the caller's signal; the worker did not stop and was killed"));
    const onOutput = (stream: "stdout" | "stderr", data: string) => {
      outBytes += Buffer.byteLength(data);
      if (outBytes > limits.outputBytes + OUTPUT_SLACK_BYTES) return hardStop(new OutputLimitError(limits.outputBytes));
      if (stream === "stdout") {
        stdout += data;
        opts.onStdout?.(data);
      } else {
        stderr += data;
        opts.onStderr?.(data);
      }
    };
    // The worker counts results against the output cap with the output; the host counts both again.
    const shown = new ResultGate({ room: () => limits.outputBytes - outBytes, charge: (n) => (outBytes += n) }, (text) => onOutput("stderr", text), opts.onResult);
    const send = () => this.call(nanoOnly ? { type: "run", id, code, nanoOnly } : { type: "run", id, code }, onOutput, (r: DisplayResult) => shown.add(r));
    const settle = async (answer: () => Promise<RunAnswer>): Promise<EngineRunResult | NeedsHeavy> => {
      timers.push(setTimeout(() => interruptThenKill(INTERRUPT_REASON.timeout, () => new TimeoutError(opts.timeoutMs)), opts.timeoutMs));
      if (opts.signal?.aborted) {
        for (const t of timers) clearTimeout(t);
        throw new AbortedError();
      }
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      const broker = this.broker;
      if (broker) {
        // In-flight requests end with the run (endRun); the interrupt at the deadline wins the race.
        const deadline = Date.now() + opts.timeoutMs + limits.graceMs;
        w.onFetch = (m) => {
          if (m.id !== id) return hardStop(new ProtocolError(`worker sent a fetch for run ${m.id} during run ${id}`));
          broker.handle(m, deadline, (r) => w.send(r));
        };
      }
      w.watchRss(limits.memoryMb * MiB + 2 * limits.vfsBytes + RSS_OVERHEAD_BYTES, () => new MemoryLimitError(limits.memoryMb, "the worker's resident memory passed its cap and it was killed"));
      try {
        const m = await answer();
        if (m.type === "needsHeavy" && nanoOnly && stdout === "" && stderr === "") return { needsHeavy: m.reason };
        if (m.type !== "result") throw new ProtocolError(`worker answered a run with a ${m.type} message`);
        return {
          stdout,
          stderr,
          value: m.value,
          error: m.error,
          limitHit: shown.cut ? "outputBytes" : (m.limitHit as LimitName | null),
          durationMs: m.durationMs,
          vfsDigest: m.vfsDigest,
          results: shown.results,
        };
      } catch (e) {
        this.closed ??= (e as Error).message;
        await this.dispose(this.closed);
        throw withPartialResult(e, { stdout, stderr });
      } finally {
        settled = true;
        for (const t of timers) clearTimeout(t);
        opts.signal?.removeEventListener("abort", onAbort);
        w.stopRssWatch();
        w.onFetch = undefined;
        broker?.endRun();
      }
    };
    return { send, settle };
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    await this.fsCall(fsRequest({ kind: "write", path, data }));
  }

  async readFile(path: string): Promise<Uint8Array> {
    const r = await this.fsCall({ op: "read", path });
    return new Uint8Array(Buffer.from(r.data ?? "", "base64"));
  }

  async list(path: string): Promise<DirEntry[]> {
    return (await this.fsCall({ op: "list", path })).entries ?? [];
  }

  async remove(path: string): Promise<void> {
    await this.fsCall({ op: "remove", path, recursive: true });
  }

  async exists(path: string): Promise<boolean> {
    return (await this.fsCall({ op: "exists", path })).exists ?? false;
  }

  async makeDir(path: string): Promise<void> {
    await this.fsCall({ op: "mkdir", path });
  }

  /**
   * A new seeded stream in the worker (and Python's `random` reseeded from it). The guest may have
   * replaced what the reseed calls (`random.seed` is guest-writable), so it runs under the
   * sandbox's time limit like a cell: past it and the grace the worker is killed.
   */
  async reseed(seed: number): Promise<void> {
    const r = this.prepareReseed(seed);
    await r.settle(() => r.send());
  }

  private prepareReseed(seed: number): Prepared<void> {
    const { limits } = this.config;
    const id = ++this.nextId;
    return {
      send: () => this.call({ type: "reseed", id, seed }),
      settle: async (answer) => {
        const timer = setTimeout(() => {
          const err = new TimeoutError(limits.timeoutMs, "reseeding the sandbox did not finish (guest code replaced what it calls?) and the worker was killed");
          this.closed ??= err.message;
          this.worker.kill(err);
        }, limits.timeoutMs + limits.graceMs);
        try {
          const m = await answer();
          if (m.type !== "reply" || !m.ok) throw new WorkerCrashedError(`worker refused to reseed: ${m.type === "reply" ? (m.message ?? m.errno) : m.type}`);
        } finally {
          clearTimeout(timer);
        }
      },
    };
  }

  /** Forget the network record so far (a restored sandbox's replayed requests are not its own). */
  clearNetworkLog(): void {
    this.broker?.log.clear();
  }

  async dispose(reason = "killed"): Promise<void> {
    this.closed ??= reason;
    this.worker.kill(new WorkerCrashedError(`sandbox closed: ${reason}`));
    await this.worker.exited$();
  }

  private async fsCall(req: FsRequest): Promise<Reply> {
    const f = this.prepareFs(req);
    return f.settle(() => f.send());
  }

  private prepareFs(req: FsRequest): Prepared<Reply> {
    const id = ++this.nextId;
    return {
      send: () => this.call({ type: "fs", id, ...req } as HostMessage),
      settle: async (answer) => {
        const m = await answer();
        if (m.type !== "reply") throw new WorkerCrashedError(`worker answered a file operation with a ${m.type} message`);
        if (m.ok) return m;
        if (m.limit) throw new FileSystemQuotaError(m.limit, this.config.limits[m.limit], req.path);
        throw new FileSystemError(req.path, m.errno ?? "EIO", m.message ?? "file system error");
      },
    };
  }

  private async call(msg: HostMessage, onOutput?: (s: "stdout" | "stderr", d: string) => void, onDisplay?: (r: DisplayResult) => void): Promise<RunAnswer> {
    try {
      const m = await this.worker.request(msg, onOutput, onDisplay);
      if (m.type === "reply" && !m.ok && msg.type === "configure") throw new WorkerCrashedError(`worker refused its configuration: ${m.message ?? m.errno}`);
      return m;
    } catch (e) {
      if (e instanceof WorkerCrashedError && /out of memory/i.test(e.message)) {
        throw new MemoryLimitError(this.config.limits.memoryMb, "the worker ran out of memory and died");
      }
      throw e;
    }
  }
}
