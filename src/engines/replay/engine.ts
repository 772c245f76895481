// Snapshots of a nano-tier sandbox by deterministic replay. A Wasm worker's memory cannot be saved
// and started again cheaply, but its inputs can: this wrapper records, in order, every cell that
// completed (code, time limit, whether it raised) and every host-side file change (write, remove,
// mkdir, reseed). A snapshot is that history plus an image of the sandbox's files (/home/user and
// /tmp); a restore starts a fresh engine with the same options, seed and clock (the registry hands
// in `start`), replays the history with output discarded, then makes the files equal to the image.
// With a seed and the virtual clock the replay is byte-identical, so globals, imports, files and
// the random stream are the original's; docs/ARCHITECTURE.md ("Nano snapshots") says what differs
// otherwise. Imports no other engine.
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";
import { InvalidOptionsError, ReplayError, SavedStateError, SnapshotRemovedError, TierUnavailableError } from "../../errors.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { Engine, EngineNetwork, EngineRestoreOptions, EngineRunOptions, EngineRunResult, EngineSnapshot, NanoOnlyRunner, NeedsHeavy } from "../engine.js";
import { listTree, mapLimited, type WalkEntry, type WalkOptions } from "../file-walk.js";
import { readSavedFile } from "../saved-files.js";

/** Most steps (cells and host file operations) a history holds; past it snapshot() refuses, the sandbox runs on. */
export const MAX_HISTORY_STEPS = 1000;
/** Most bytes a history holds: cells' code plus the data of host-written files. */
export const MAX_HISTORY_BYTES = 8 * 1024 * 1024;

/** One input of the sandbox, in the order it came. */
type Step =
  | { kind: "run"; /** Which runCode call of the sandbox (1 = the first). */ n: number; code: string; timeoutMs: number; /** The guest error's name when it raised. */ raised: string | null }
  | { kind: "write"; path: string; data: Uint8Array }
  | { kind: "remove"; path: string }
  | { kind: "mkdir"; path: string }
  | { kind: "reseed"; seed: number };

interface History {
  steps: Step[];
  bytes: number;
  /** runCode calls so far (the numbering of `run` steps). */
  runs: number;
}

/**
 * File reads sent to the worker before the first answer comes back (snapshot's image, restore's
 * check): each read is a round trip, so they go out together, as many as this at a time.
 */
const READS_IN_FLIGHT = 16;

/** A nano engine the wrapper drives: a WorkerEngine (Python or JavaScript). */
export interface ReplayableEngine extends Engine {
  /** Run cells in order with no round trip between them, `each` called on every answer in order (WorkerEngine.runSeries). */
  runSeries(cells: readonly { code: string; timeoutMs: number }[], each: (index: number, r: EngineRunResult) => void): Promise<void>;
  reseed(seed: number): Promise<void>;
  clearNetworkLog(): void;
}

export interface ReplayConfig {
  /** Start a fresh engine with the sandbox's resolved options, seed, clock, mounts and secrets. */
  start(): Promise<ReplayableEngine>;
  /** Guest paths of the mounts: re-mounted by `start`, never part of the file image. */
  mountPaths: readonly string[];
  /** A read-write mount, if the sandbox has one (its index in `mounts`): a replay would repeat its writes on the host. */
  writableMount?: { index: number; guestPath: string } | undefined;
  /** The sandbox's limits.vfsBytes: the file image is at most this big. */
  vfsBytes: number;
  /** Most entries the file image walks. */
  maxEntries: number;
}

/** A file image entry: a directory, or a file with its bytes. */
type ImageEntry = { path: string; type: "dir" } | { path: string; type: "file"; data: Uint8Array };

export class ReplayEngine implements Engine {
  private readonly history: History;
  /** Why this sandbox's history can no longer be replayed (a cell stopped mid-way, the cap passed). */
  private unreplayable: string | undefined;

  private constructor(
    private readonly inner: ReplayableEngine,
    private readonly config: ReplayConfig,
    history: History = { steps: [], bytes: 0, runs: 0 },
  ) {
    this.history = history;
  }

  static async start(config: ReplayConfig): Promise<ReplayEngine> {
    return new ReplayEngine(await config.start(), config);
  }

  get closedReason(): string | undefined {
    return this.inner.closedReason;
  }

  get pid(): number | undefined {
    return this.inner.pid;
  }

  get network(): EngineNetwork | undefined {
    return this.inner.network;
  }

  async run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    const n = ++this.history.runs;
    return this.recordRun(n, code, opts, await this.inner.run(code, opts));
  }

  /**
   * Tier "auto"'s nano side (NanoOnlyRunner), when the wrapped engine is one: a cell the guest
   * sends to the heavy tier ran nothing here, so it is not recorded (its runCode call is counted).
   */
  async runUnlessHeavy(code: string, opts: EngineRunOptions): Promise<EngineRunResult | NeedsHeavy> {
    const inner = this.inner as ReplayableEngine & Partial<NanoOnlyRunner>;
    if (!inner.runUnlessHeavy) throw new TierUnavailableError("this nano engine cannot tell which cells need the heavy tier");
    const n = ++this.history.runs;
    const r = await inner.runUnlessHeavy(code, opts);
    return "needsHeavy" in r ? r : this.recordRun(n, code, opts, r);
  }

  /**
   * The cells of the history that ran without error, in order, and the runCode calls so far: what
   * a tier "auto" sandbox restored from a snapshot replays on the heavy tier if it moves there.
   */
  replayedCells(): { cells: { n: number; code: string; timeoutMs: number }[]; runs: number } {
    const cells = this.history.steps.flatMap((s) => (s.kind === "run" && s.raised === null ? [{ n: s.n, code: s.code, timeoutMs: s.timeoutMs }] : []));
    return { cells, runs: this.history.runs };
  }

  private recordRun(n: number, code: string, opts: EngineRunOptions, r: EngineRunResult): EngineRunResult {
    if (r.limitHit === "timeoutMs" || opts.signal?.aborted) {
      // Interrupted at a point of real time: no replay stops it at the same statement.
      this.unreplayable ??= `runCode call ${n} was stopped ${r.limitHit === "timeoutMs" ? `by its time limit (${opts.timeoutMs} ms)` : "by the caller's signal"} part-way, at a point a replay cannot reproduce`;
    } else {
      this.record({ kind: "run", n, code, timeoutMs: opts.timeoutMs, raised: r.error?.name ?? null }, Buffer.byteLength(code));
    }
    return r;
  }

  async writeFile(path: string, data: Uint8Array): Promise<void> {
    await this.inner.writeFile(path, data);
    this.record({ kind: "write", path, data: data.slice() }, data.byteLength + path.length);
  }

  async remove(path: string): Promise<void> {
    await this.inner.remove(path);
    this.record({ kind: "remove", path }, path.length);
  }

  async makeDir(path: string): Promise<void> {
    await this.inner.makeDir(path);
    this.record({ kind: "mkdir", path }, path.length);
  }

  async reseed(seed: number): Promise<void> {
    await this.inner.reseed(seed);
    this.record({ kind: "reseed", seed }, 8);
  }

  readFile(path: string): Promise<Uint8Array> {
    return this.inner.readFile(path);
  }

  list(path: string): Promise<DirEntry[]> {
    return this.inner.list(path);
  }

  exists(path: string): Promise<boolean> {
    return this.inner.exists(path);
  }

  /** The history so far and an image of the files; the sandbox keeps running. */
  async snapshot(): Promise<EngineSnapshot> {
    const rw = this.config.writableMount;
    if (rw) {
      throw new InvalidOptionsError([
        { path: `mounts.${rw.index}.readOnly`, message: `snapshot() of a nano sandbox replays its cells, which would repeat their writes in the host directory mounted read-write at ${rw.guestPath}; mount it read-only to take snapshots` },
      ]);
    }
    if (this.unreplayable) throw new ReplayError(`snapshot() of a nano sandbox replays its history, and this one cannot be replayed: ${this.unreplayable}`);
    const image = await this.readImage();
    const h = this.history;
    return new ReplaySnapshot(this.config, { steps: [...h.steps], bytes: h.bytes, runs: h.runs }, image);
  }

  async dispose(reason?: string): Promise<void> {
    await this.inner.dispose(reason);
  }

  private record(step: Step, bytes: number): void {
    if (this.unreplayable) return;
    const h = this.history;
    if (h.steps.length + 1 > MAX_HISTORY_STEPS || h.bytes + bytes > MAX_HISTORY_BYTES) {
      // Kept no further: the memory a history holds is capped with it.
      this.unreplayable = `its history passed the replay cap of ${MAX_HISTORY_STEPS} steps (cells and host file operations) or ${MAX_HISTORY_BYTES} bytes (cells' code and host-written files) (MAX_HISTORY_STEPS, MAX_HISTORY_BYTES); create a new sandbox for work you mean to snapshot, or snapshot earlier`;
      h.steps.length = 0;
      h.bytes = 0;
      return;
    }
    h.steps.push(step);
    h.bytes += bytes;
  }

  private walkOptions(what: string): WalkOptions {
    const { mountPaths, maxEntries } = this.config;
    return { mountPaths, maxEntries, tooMany: () => new ReplayError(`${what}: the sandbox lists more than ${maxEntries} files and directories under /home/user and /tmp`) };
  }

  /** Every directory and file under /home/user and /tmp, with contents: at most limits.vfsBytes. */
  private async readImage(): Promise<ImageEntry[]> {
    const tooBig = () => new ReplayError(`snapshot() saves the sandbox's files, which hold more than its limits.vfsBytes of ${this.config.vfsBytes} bytes`);
    const entries = await listTree(this.inner, this.walkOptions("snapshot() saves the sandbox's files"));
    // The listed sizes refuse an oversized image before any read; the bytes read are counted again.
    if (entries.reduce((n, e) => n + e.size, 0) > this.config.vfsBytes) throw tooBig();
    let bytes = 0;
    return mapLimited(entries, READS_IN_FLIGHT, async (e): Promise<ImageEntry> => {
      if (e.type === "dir") return { path: e.path, type: "dir" };
      const data = await this.inner.readFile(e.path);
      bytes += data.byteLength;
      if (bytes > this.config.vfsBytes) throw tooBig();
      return { path: e.path, type: "file", data };
    });
  }

  /**
   * Replay `history` into this (fresh) engine, output discarded, then make its files equal to
   * `image`. Only what differs is written or removed, so an exact replay writes nothing (a write
   * would move the virtual clock on); what it does write is recorded like any host operation.
   */
  async rebuild(history: History, image: ImageEntry[]): Promise<void> {
    const steps = history.steps;
    for (let i = 0; i < steps.length; ) {
      const step = steps[i]!;
      if (step.kind === "run") {
        // Consecutive cells go to the worker together: it runs them back to back.
        let j = i;
        while (j < steps.length && steps[j]!.kind === "run") j++;
        await this.replayCells(steps.slice(i, j) as Extract<Step, { kind: "run" }>[]);
        i = j;
        continue;
      }
      i++;
      try {
        if (step.kind === "write") await this.writeFile(step.path, step.data);
        else if (step.kind === "remove") await this.remove(step.path);
        else if (step.kind === "mkdir") await this.makeDir(step.path);
        else await this.reseed(step.seed);
      } catch (e) {
        throw new ReplayError(`restoring the snapshot replays its history, and the host's ${step.kind}${"path" in step ? ` of ${JSON.stringify(step.path)}` : ""} failed there: ${(e as Error).message}`, { cause: e });
      }
    }
    this.history.runs = history.runs;
    try {
      await this.applyImage(image);
    } catch (e) {
      if (e instanceof ReplayError) throw e;
      throw new ReplayError(`restoring the snapshot's files failed: ${(e as Error).message}`, { cause: e });
    }
    this.inner.clearNetworkLog();
  }

  /**
   * Replay consecutive cells (one series in the worker) and check each as its answer comes, as if
   * it had run alone: it finished within its time limit and raised what it first raised (or
   * nothing). Cells after a mismatch may have run too, in a worker the failed restore disposes.
   */
  private async replayCells(cells: Extract<Step, { kind: "run" }>[]): Promise<void> {
    const what = (step: Extract<Step, { kind: "run" }>) => `restoring the snapshot replays its cells, and cell ${step.n} (runCode call ${step.n} of the snapshotted sandbox)`;
    let done = 0;
    const check = (k: number, r: EngineRunResult) => {
      const step = cells[k]!;
      if (r.limitHit === "timeoutMs") throw new ReplayError(`${what(step)} did not finish within its time limit of ${step.timeoutMs} ms`, { cell: step.n });
      const raised = r.error?.name ?? null;
      if (raised !== step.raised) {
        const first = step.raised === null ? "ran without error" : `raised ${step.raised}`;
        const now = r.error ? `raised ${r.error.name}: ${r.error.message}` : "ran without error";
        throw new ReplayError(`${what(step)} ${now} where it first ${first} (the sandbox is not deterministic: give it a seed)`, { cell: step.n, ...(r.error ? { guestError: r.error } : {}) });
      }
      // Recorded as the run it replays, numbered as it first was (runCode calls that recorded nothing leave gaps).
      this.history.runs = step.n;
      this.recordRun(step.n, step.code, { timeoutMs: step.timeoutMs }, r);
      done++;
    };
    try {
      await this.inner.runSeries(
        cells.map((c) => ({ code: c.code, timeoutMs: c.timeoutMs })),
        check,
      );
    } catch (e) {
      if (e instanceof ReplayError) throw e;
      const step = cells[Math.min(done, cells.length - 1)]!;
      throw new ReplayError(`${what(step)} failed there: ${(e as Error).message}`, { cell: step.n, cause: e });
    }
  }

  private async applyImage(image: ImageEntry[]): Promise<void> {
    // The image's files are read back while the tree is listed (one round trip, not two): after an
    // exact replay each is there with the image's bytes. A read that fails (not there, not a file)
    // counts as different; the listing decides what is kept.
    const files = image.filter((w) => w.type === "file");
    const readBack = mapLimited(files, READS_IN_FLIGHT, (w) => this.inner.readFile(w.path).catch(() => undefined));
    readBack.catch(() => undefined); // awaited below unless the listing fails first
    const have = await listTree(this.inner, this.walkOptions("restoring the snapshot's files"));
    const want = new Map(image.map((e) => [e.path, e]));
    const kept = new Map<string, WalkEntry>();
    const removed: string[] = [];
    for (const e of have) {
      if (removed.some((r) => e.path.startsWith(`${r}/`))) continue;
      if (want.get(e.path)?.type === e.type) {
        kept.set(e.path, e);
        continue;
      }
      await this.remove(e.path);
      removed.push(e.path);
    }
    const read = await readBack;
    const equal = new Set<string>();
    files.forEach((w, i) => {
      const data = read[i];
      if (w.type === "file" && data && kept.get(w.path)?.size === w.data.byteLength && Buffer.from(data).equals(w.data)) equal.add(w.path);
    });
    for (const w of image) {
      if (w.type === "dir") {
        if (!kept.has(w.path)) await this.makeDir(w.path);
      } else if (!equal.has(w.path)) {
        await this.writeFile(w.path, w.data);
      }
    }
  }
}

/** A nano sandbox saved as its history and file image; every restore is an independent sandbox. */
class ReplaySnapshot implements EngineSnapshot {
  private removed = false;

  constructor(
    private readonly config: ReplayConfig,
    private history: History,
    private image: ImageEntry[],
  ) {}

  async restore(opts: EngineRestoreOptions = {}): Promise<Engine> {
    if (this.removed) throw new SnapshotRemovedError();
    const engine = await ReplayEngine.start(this.config);
    try {
      await engine.rebuild(this.history, this.image);
      if (opts.seed !== undefined) await engine.reseed(opts.seed);
    } catch (e) {
      await engine.dispose("restoring the snapshot failed");
      throw e;
    }
    return engine;
  }

  async remove(): Promise<void> {
    this.removed = true;
    this.history = { steps: [], bytes: 0, runs: 0 };
    this.image = [];
  }

  /** Memory the history and the file image hold. */
  sizeBytes(): number {
    return this.history.bytes + this.image.reduce((n, e) => n + (e.type === "file" ? e.data.byteLength + e.path.length : e.path.length), 0);
  }

  /** Write the history and image into `dir` (`loadReplaySnapshot` reads them back). */
  async persist(dir: string): Promise<unknown> {
    if (this.removed) throw new SnapshotRemovedError();
    return writeReplay(dir, this.history, this.image);
  }
}

/** A saved history and file image on disk: the JSON below, bytes in `data/<n>` files beside it. */
const savedReplaySchema = z.strictObject({
  kind: z.literal("replay"),
  // runCode calls, not steps: on tier "auto" a call whose cell needed the heavy tier counts but records nothing.
  runs: z.number().int().min(0).max(2 ** 31),
  steps: z
    .array(
      z.discriminatedUnion("kind", [
        z.strictObject({ kind: z.literal("run"), n: z.number().int().min(1).max(2 ** 31), code: z.string().max(MAX_HISTORY_BYTES), timeoutMs: z.number().int().positive().max(2 ** 31), raised: z.string().max(256).nullable() }),
        z.strictObject({ kind: z.literal("write"), path: z.string().min(1).max(4096), data: z.string() }),
        z.strictObject({ kind: z.literal("remove"), path: z.string().min(1).max(4096) }),
        z.strictObject({ kind: z.literal("mkdir"), path: z.string().min(1).max(4096) }),
        z.strictObject({ kind: z.literal("reseed"), seed: z.number().int().min(0).max(2 ** 53) }),
      ]),
    )
    .max(MAX_HISTORY_STEPS),
  image: z.array(z.discriminatedUnion("type", [z.strictObject({ path: z.string().min(1).max(4096), type: z.literal("dir") }), z.strictObject({ path: z.string().min(1).max(4096), type: z.literal("file"), data: z.string() })])),
});

/** Data files are named by a running number under data/: never a name a descriptor could choose freely. */
const DATA_FILE = /^data\/[0-9]{1,7}$/;

function writeReplay(dir: string, history: History, image: ImageEntry[]): z.input<typeof savedReplaySchema> {
  fs.mkdirSync(path.join(dir, "data"), { recursive: true });
  let n = 0;
  const put = (data: Uint8Array): string => {
    const rel = `data/${n++}`;
    fs.writeFileSync(path.join(dir, rel), data);
    return rel;
  };
  return {
    kind: "replay",
    runs: history.runs,
    steps: history.steps.map((s) => (s.kind === "write" ? { kind: "write", path: s.path, data: put(s.data) } : s)),
    image: image.map((e) => (e.type === "file" ? { path: e.path, type: "file", data: put(e.data) } : e)),
  };
}

/**
 * A replay snapshot from what `persist` wrote into `dir`. Every field is checked, each data file
 * named by its number and size-checked against the history cap (and the image's against the
 * sandbox's limits.vfsBytes and entry count), so a corrupt or hostile descriptor fails here.
 */
export function loadReplaySnapshot(config: ReplayConfig, saved: unknown, dir: string): EngineSnapshot {
  const r = savedReplaySchema.safeParse(saved);
  if (!r.success) throw new SavedStateError(`the saved nano history in ${dir} is not valid: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  const d = r.data;
  const read = (rel: string, budget: number): Uint8Array => {
    if (!DATA_FILE.test(rel)) throw new SavedStateError(`the saved nano history in ${dir} names the data file ${JSON.stringify(rel.slice(0, 100))}, which is not one of its own (data/<n>)`);
    return new Uint8Array(readSavedFile(dir, rel, Math.max(0, budget)));
  };
  let historyBytes = 0;
  const steps: Step[] = d.steps.map((s) => {
    if (s.kind === "write") {
      const data = read(s.data, MAX_HISTORY_BYTES - historyBytes);
      historyBytes += data.byteLength + s.path.length;
      return { kind: "write", path: s.path, data };
    }
    historyBytes += s.kind === "run" ? Buffer.byteLength(s.code) : s.kind === "reseed" ? 8 : s.path.length;
    return s;
  });
  if (historyBytes > MAX_HISTORY_BYTES) throw new SavedStateError(`the saved nano history in ${dir} holds more than ${MAX_HISTORY_BYTES} bytes (MAX_HISTORY_BYTES)`);
  if (d.image.length > config.maxEntries) throw new SavedStateError(`the saved file image in ${dir} lists ${d.image.length} entries, more than the sandbox's ${config.maxEntries}`);
  let imageBytes = 0;
  const image: ImageEntry[] = d.image.map((e) => {
    if (e.type === "dir") return e;
    const data = read(e.data, config.vfsBytes - imageBytes);
    imageBytes += data.byteLength;
    return { path: e.path, type: "file", data };
  });
  return new ReplaySnapshot(config, { steps, bytes: historyBytes, runs: d.runs }, image);
}
