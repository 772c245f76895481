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
import type { Engine, EngineNetwork, EngineRestoreOptions, EngineRunOptions, EngineRunResult, EngineSeries, EngineSeriesAnswer, EngineSeriesStep, EngineSnapshot, NanoOnlyRunner, NeedsHeavy } from "../engine.js";
import { entryStep, listTree, mapLimited, WRITABLE_ROOTS, type WalkOptions } from "../file-walk.js";
import { seriesOneByOne } from "../series.js";
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

/**
 * A nano engine the wrapper drives: a WorkerEngine (Python or JavaScript). With `series` a restore
 * is one burst of requests (WorkerEngine.series); without, the same requests go one at a time.
 */
export interface ReplayableEngine extends Engine, Partial<EngineSeries> {
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
   * `image`. The whole replay and the check of the files go to the worker as one series (one burst,
   * no round trip between requests): every step of the history, then a listing of each root and of
   * each directory of the image and a read of each of its files. Only what differs is then written
   * or removed (a second series), so an exact replay writes nothing (a write would move the virtual
   * clock on); what it does write is recorded like any host operation. A step that fails kills the
   * worker (what was sent after it would run on a wrong state) and fails the restore with a
   * ReplayError whose cause is the step's own error.
   */
  async rebuild(history: History, image: ImageEntry[]): Promise<void> {
    const steps = history.steps;
    const check = imageCheck(image);
    let at = 0;
    try {
      await this.series([...steps.map(seriesStep), ...check.steps], (i, answer) => {
        if (i < steps.length) this.replayed(steps[i]!, answer);
        else check.answers.push(answer);
        at = i + 1;
      });
    } catch (e) {
      if (e instanceof ReplayError) throw e;
      const step = steps[at];
      if (!step) throw new ReplayError(`restoring the snapshot's files failed: ${(e as Error).message}`, { cause: e });
      if (step.kind === "run") throw new ReplayError(`${replayed(step)} failed there: ${(e as Error).message}`, { cell: step.n, cause: e });
      throw new ReplayError(`restoring the snapshot replays its history, and the host's ${step.kind}${"path" in step ? ` of ${JSON.stringify(step.path)}` : ""} failed there: ${(e as Error).message}`, { cause: e });
    }
    this.history.runs = history.runs;
    const fixes = this.imageFixes(image, check.answers);
    if (fixes.length > 0) {
      try {
        await this.series(fixes, (i) => this.replayed(fixes[i]!, { kind: "done" }));
      } catch (e) {
        throw new ReplayError(`restoring the snapshot's files failed: ${(e as Error).message}`, { cause: e });
      }
    }
    this.inner.clearNetworkLog();
  }

  private series(steps: readonly EngineSeriesStep[], each: (index: number, answer: EngineSeriesAnswer) => void): Promise<{ done: number; pipelined: boolean }> {
    return this.inner.series ? this.inner.series(steps, each) : seriesOneByOne(this.inner, steps, each);
  }

  /**
   * One replayed step's answer, checked and recorded as if the step had come alone. A cell must
   * finish within its time limit and raise what it first raised (or nothing); it is recorded as
   * the run it replays, numbered as it first was (runCode calls that recorded nothing leave gaps).
   */
  private replayed(step: Step, answer: EngineSeriesAnswer): void {
    if (step.kind !== "run") {
      this.record(step, step.kind === "write" ? step.data.byteLength + step.path.length : step.kind === "reseed" ? 8 : step.path.length);
      return;
    }
    if (answer.kind !== "run") throw new ReplayError(`${replayed(step)} got a ${answer.kind} answer`, { cell: step.n });
    const r = answer.result;
    if (r.limitHit === "timeoutMs") throw new ReplayError(`${replayed(step)} did not finish within its time limit of ${step.timeoutMs} ms`, { cell: step.n });
    const raised = r.error?.name ?? null;
    if (raised !== step.raised) {
      const first = step.raised === null ? "ran without error" : `raised ${step.raised}`;
      const now = r.error ? `raised ${r.error.name}: ${r.error.message}` : "ran without error";
      throw new ReplayError(`${replayed(step)} ${now} where it first ${first} (the sandbox is not deterministic: give it a seed)`, { cell: step.n, ...(r.error ? { guestError: r.error } : {}) });
    }
    this.history.runs = step.n;
    this.recordRun(step.n, step.code, { timeoutMs: step.timeoutMs }, r);
  }

  /**
   * What makes the files equal to `image`, from the check's answers: remove what is there but not
   * in the image (or of another type), make its missing directories, write its files that are
   * missing or differ. A listing or read that was refused counts as "not there".
   */
  private imageFixes(image: ImageEntry[], answers: EngineSeriesAnswer[]): Extract<Step, { kind: "write" | "remove" | "mkdir" }>[] {
    const step = entryStep(this.walkOptions("restoring the snapshot's files"));
    const want = new Map(image.map((e) => [e.path, e]));
    const listed = [...WRITABLE_ROOTS, ...image.filter((e) => e.type === "dir").map((e) => e.path)];
    const files = image.filter((e) => e.type === "file");
    const kept = new Map<string, number>(); // path → size (0 for a directory)
    const removes: Extract<Step, { kind: "remove" }>[] = [];
    // Roots first, then the image's directories parents first: a directory's listing counts only
    // when the directory itself was found (and kept) in its parent's.
    listed.forEach((dir, i) => {
      const a = answers[i];
      if (a?.kind !== "list" || (i >= WRITABLE_ROOTS.length && !kept.has(dir))) return;
      for (const listedEntry of a.entries) {
        const e = step(dir, listedEntry);
        if (!e) continue;
        if (want.get(e.path)?.type === e.type) kept.set(e.path, e.size);
        else removes.push({ kind: "remove", path: e.path });
      }
    });
    const fixes: Extract<Step, { kind: "write" | "remove" | "mkdir" }>[] = [...removes];
    const reads = answers.slice(listed.length);
    const equal = new Set<string>();
    files.forEach((w, i) => {
      const a = reads[i];
      if (w.type === "file" && a?.kind === "read" && kept.get(w.path) === w.data.byteLength && Buffer.from(a.data).equals(w.data)) equal.add(w.path);
    });
    for (const w of image) {
      if (w.type === "dir") {
        if (!kept.has(w.path)) fixes.push({ kind: "mkdir", path: w.path });
      } else if (!equal.has(w.path)) {
        fixes.push({ kind: "write", path: w.path, data: w.data });
      }
    }
    return fixes;
  }
}

/** How a replayed cell is named in a ReplayError. */
function replayed(step: Extract<Step, { kind: "run" }>): string {
  return `restoring the snapshot replays its cells, and cell ${step.n} (runCode call ${step.n} of the snapshotted sandbox)`;
}

/** A history step as a request of a series. */
function seriesStep(s: Step): EngineSeriesStep {
  return s.kind === "run" ? { kind: "run", code: s.code, timeoutMs: s.timeoutMs } : s;
}

/**
 * The queries that check a replay's files against `image`, sent right after the replay: a listing
 * of each root and of each of the image's directories (parents before children, as the image is
 * walked), then a read of each of its files. Their answers are pushed onto `answers` in order.
 */
function imageCheck(image: ImageEntry[]): { steps: EngineSeriesStep[]; answers: EngineSeriesAnswer[] } {
  const dirs = [...WRITABLE_ROOTS, ...image.filter((e) => e.type === "dir").map((e) => e.path)];
  return {
    steps: [...dirs.map((path): EngineSeriesStep => ({ kind: "list", path })), ...image.filter((e) => e.type === "file").map((e): EngineSeriesStep => ({ kind: "read", path: e.path }))],
    answers: [],
  };
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
