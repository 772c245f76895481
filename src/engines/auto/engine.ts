// Tier "auto": one sandbox that starts on the nano tier and moves to the heavy tier, for good, when
// a cell needs it. Whether it does is decided inside the nano worker, on the same round trip as
// the run (the guest parses the cell; NanoOnlyRunner), never by parsing guest code here. The move:
// start a heavy sandbox, copy the nano sandbox's files (/home/user and /tmp), replay the cells that
// ran on nano without error there (output discarded), copy the files again (so they end as nano
// had them, whatever the replay wrote), then dispose of the nano side. Engines are handed in by the
// registry (this module imports no other engine). On the nano tier the nano side is a replay
// recorder (engines/replay), so a snapshot (pause, fork) is its history and files; a restore is
// again on the nano tier, with the cells a later move replays.
import { AbortedError, FileSystemError, ReplayError, SandboxClosedError, TierUnavailableError } from "../../errors.js";
import { CarriedNetworkLog } from "../pool/network-log.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { Engine, EngineNetwork, EnginePorts, EngineExecOptions, EngineExecResult, EngineInfo, EngineProcess, EngineRunOptions, EngineRunResult, EngineSnapshot, EngineSpawnOptions, NanoOnlyRunner } from "../engine.js";
import { walkFiles, WRITABLE_ROOTS } from "../file-walk.js";

/** Code kept for replay, in total; past it the sandbox can no longer move (a clear error says so). */
const MAX_REPLAY_CODE_BYTES = 16 * 1024 * 1024;

export interface AutoEngineConfig {
  /** Start the heavy side (the registry's heavy engines, with autoHeavyOptions). */
  startHeavy(): Promise<Engine>;
  /** Guest paths of the mounts: present on both sides, never copied. */
  mountPaths: readonly string[];
  /** Most entries a move copies (the nano side's vfsFiles plus slack): a worker that lists forever cannot hold the move. */
  maxCopyEntries: number;
}

/** A cell that ran on the nano tier without error: replayed on the heavy tier at the move. */
interface Cell {
  /** Which runCode call of the sandbox it was (1 = the first). */
  n: number;
  code: string;
  timeoutMs: number;
}

type NanoSide = Engine & NanoOnlyRunner;

/** A nano side restored from a snapshot (engines/replay): it says which of its replayed cells a move replays on the heavy tier. */
interface RestoredNano extends NanoSide {
  replayedCells(): { cells: Cell[]; runs: number };
}

export class AutoEngine implements Engine {
  private nano: NanoSide | undefined;
  private heavy: Engine | undefined;
  /** A heavy side being started or filled by a move, so kill() ends it too. */
  private moving: Engine | undefined;
  private readonly cells: Cell[] = [];
  private cellBytes = 0;
  private runs = 0;
  private closed: string | undefined;
  /** The network record: the nano side's attempts (kept at the move), then the heavy side's. */
  private readonly networkLog: CarriedNetworkLog;

  private constructor(
    side: { nano: NanoSide } | { heavy: Engine },
    private readonly config: AutoEngineConfig,
  ) {
    if ("nano" in side) this.nano = side.nano;
    else this.heavy = side.heavy;
    this.networkLog = new CarriedNetworkLog(this.current().network);
  }

  /** One record across the move, and one watch: listeners follow the sandbox to the heavy side. */
  get network(): EngineNetwork | undefined {
    return this.networkLog.empty ? undefined : this.networkLog;
  }

  /**
   * A new sandbox: on the nano tier until a cell needs the heavy tier. `replayed`: restored from a
   * snapshot, the cells that ran on the nano tier before it (replayed at a move) and the runCode
   * calls so far.
   */
  static onNano(nano: NanoSide, config: AutoEngineConfig, replayed?: { cells: readonly Cell[]; runs: number }): AutoEngine {
    const engine = new AutoEngine({ nano }, config);
    if (replayed) {
      for (const cell of replayed.cells) engine.remember({ ...cell });
      engine.runs = replayed.runs;
    }
    return engine;
  }

  /** A sandbox already on the heavy tier (restored from a snapshot). */
  static onHeavy(heavy: Engine, config: AutoEngineConfig): AutoEngine {
    return new AutoEngine({ heavy }, config);
  }

  get tier(): "nano" | "heavy" {
    return this.heavy ? "heavy" : "nano";
  }

  get info(): EngineInfo | undefined {
    return this.heavy?.info;
  }

  /**
   * The heavy side's ports once the sandbox runs there. On the nano tier there is no server to
   * reach and exposing a port does not move the sandbox (nothing could be listening yet): refused.
   */
  readonly ports: EnginePorts = {
    connect: (port) => this.heavyPorts("connect").connect(port),
    expose: (port) => this.heavyPorts("expose").expose(port),
    list: () => this.heavy?.ports?.list() ?? [],
    close: async (port) => this.heavy?.ports?.close(port),
  };

  private heavyPorts(what: string): EnginePorts {
    const ports = this.heavy?.ports;
    if (ports) return ports;
    if (this.heavy) throw new TierUnavailableError("the heavy engine of this build exposes no ports");
    throw new TierUnavailableError(
      `ports.${what} of a tier "auto" sandbox needs it to run on the heavy tier; it still runs on the nano tier, where no server can listen (it moves when a cell needs the heavy tier or on its first commands.run; or create it with { tier: "heavy" })`,
    );
  }

  get closedReason(): string | undefined {
    return this.closed ?? this.current().closedReason;
  }

  get pid(): number | undefined {
    return this.current().pid;
  }

  /**
   * Run a cell. On the nano tier the worker first checks that the cell needs nothing only the heavy
   * tier has; if it does, nothing of it runs there: the sandbox moves (see moveToHeavy) and the
   * cell runs on the heavy tier.
   */
  async run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    const n = ++this.runs;
    if (!this.heavy) {
      const nano = this.current() as NanoSide;
      const r = await nano.runUnlessHeavy(code, opts);
      if (!("needsHeavy" in r)) {
        if (r.error === null && r.limitHit !== "timeoutMs") this.remember({ n, code, timeoutMs: opts.timeoutMs });
        return { ...r, tier: "nano" };
      }
      await this.moveToHeavy(r.needsHeavy, opts.signal);
    }
    return { ...(await (this.heavy as Engine).run(code, opts)), tier: "heavy" };
  }

  /** Commands need a real userland: the first one moves the sandbox to the heavy tier. */
  async exec(argv: string[], opts: EngineExecOptions): Promise<EngineExecResult> {
    if (!this.heavy) await this.moveToHeavy("commands.run runs a command", opts.signal);
    const heavy = this.heavy as Engine;
    if (!heavy.exec) throw new TierUnavailableError("the heavy engine of this build runs no commands");
    return heavy.exec(argv, opts);
  }

  /** A background command, as exec: the first moves the sandbox to the heavy tier. */
  async spawn(argv: string[], opts: EngineSpawnOptions): Promise<EngineProcess> {
    if (!this.heavy) await this.moveToHeavy("commands.run starts a background command", opts.signal);
    const heavy = this.heavy as Engine;
    if (!heavy.spawn) throw new TierUnavailableError("the heavy engine of this build runs no background commands");
    return heavy.spawn(argv, opts);
  }

  /**
   * Host writes go where both tiers keep files, so none is left behind by a move: on the nano tier
   * as on the heavy tier, only /home/user and /tmp are writable.
   */
  async writeFile(p: string, data: Uint8Array): Promise<void> {
    if (!this.heavy) checkWritable(p);
    return this.current().writeFile(p, data);
  }

  async makeDir(p: string): Promise<void> {
    if (!this.heavy && p !== "/") checkWritable(p);
    return this.current().makeDir(p);
  }

  readFile(p: string): Promise<Uint8Array> {
    return this.current().readFile(p);
  }

  list(p: string): Promise<DirEntry[]> {
    return this.current().list(p);
  }

  remove(p: string): Promise<void> {
    return this.current().remove(p);
  }

  exists(p: string): Promise<boolean> {
    return this.current().exists(p);
  }

  /**
   * Save the sandbox. On the heavy tier: the heavy side's snapshot. On the nano tier: the nano
   * side's (a replay of its history, engines/replay, which holds the cells a later move replays);
   * refused as that one refuses (a read-write mount, a history past its cap or stopped part-way).
   */
  async snapshot(opts: { final?: boolean } = {}): Promise<EngineSnapshot> {
    const heavy = this.heavy;
    if (heavy) {
      if (!heavy.snapshot) throw new TierUnavailableError("the heavy engine of this build takes no snapshots");
      return AutoEngine.heavySnapshot(await heavy.snapshot(opts), this.config);
    }
    const nano = this.nano as NanoSide;
    if (!nano.snapshot) throw new TierUnavailableError('snapshot() of a tier "auto" sandbox on the nano tier needs its nano side to record a replayable history, and this build\'s does not');
    return AutoEngine.nanoSnapshot(await nano.snapshot(opts), this.config);
  }

  /**
   * A nano-side snapshot (taken now, or read back from disk) whose restores are tier "auto"
   * sandboxes still on the nano tier, knowing the cells to replay if they move. On disk: the nano
   * side's descriptor inside one of kind "auto-nano" (the registry's loader reads it back).
   */
  static nanoSnapshot(saved: EngineSnapshot, config: AutoEngineConfig): EngineSnapshot {
    const snap: EngineSnapshot = {
      restore: async (opts) => {
        const nano = (await saved.restore(opts)) as Partial<RestoredNano> & Engine;
        if (typeof nano.runUnlessHeavy !== "function" || typeof nano.replayedCells !== "function") {
          await nano.dispose("not a tier \"auto\" nano side");
          throw new TierUnavailableError('the nano side of this tier "auto" snapshot restores to an engine that cannot run as one');
        }
        const restored = nano as RestoredNano;
        return AutoEngine.onNano(restored, config, restored.replayedCells());
      },
      remove: () => saved.remove(),
    };
    if (saved.sizeBytes) snap.sizeBytes = saved.sizeBytes.bind(saved);
    if (saved.persist) {
      const persist = saved.persist.bind(saved);
      snap.persist = async (dir) => ({ kind: "auto-nano", nano: await persist(dir) });
    }
    return snap;
  }

  /** A heavy-side snapshot (taken now, or read back from disk) whose restores are tier "auto" sandboxes on the heavy tier. */
  static heavySnapshot(saved: EngineSnapshot, config: AutoEngineConfig): EngineSnapshot {
    const snap: EngineSnapshot = {
      restore: async (opts) => AutoEngine.onHeavy(await saved.restore(opts), config),
      remove: () => saved.remove(),
    };
    if (saved.sizeBytes) snap.sizeBytes = saved.sizeBytes.bind(saved);
    // The heavy side's descriptor as it is: the registry's loader reads it with the heavy engine's.
    if (saved.persist) snap.persist = (dir) => (saved.persist as (dir: string) => Promise<unknown>).call(saved, dir);
    return snap;
  }

  async dispose(reason = "killed"): Promise<void> {
    this.closed ??= reason;
    await Promise.all([this.nano?.dispose(reason), this.moving?.dispose(reason), this.heavy?.dispose(reason)]);
  }

  private current(): Engine {
    return (this.heavy ?? this.nano) as Engine;
  }

  private remember(cell: Cell): void {
    this.cellBytes += Buffer.byteLength(cell.code);
    if (this.cellBytes <= MAX_REPLAY_CODE_BYTES) this.cells.push(cell);
  }

  /**
   * Move the sandbox to the heavy tier, or throw and leave it on the nano tier as it was: a heavy
   * tier that cannot start here is a TierUnavailableError; a file that cannot be copied or a
   * replayed cell that fails is a ReplayError naming it. The caller's signal stops the move.
   */
  private async moveToHeavy(reason: string, signal: AbortSignal | undefined): Promise<void> {
    const nano = this.nano as NanoSide;
    if (this.cellBytes > MAX_REPLAY_CODE_BYTES) {
      throw new ReplayError(
        `this cell needs the heavy tier (${reason}), but the cells that ran on the nano tier hold more than ${MAX_REPLAY_CODE_BYTES} bytes of code, too much to replay there; the sandbox stays on the nano tier (create one with { tier: "heavy" } for this work)`,
      );
    }
    let heavy: Engine;
    try {
      heavy = await this.config.startHeavy();
    } catch (e) {
      throw new TierUnavailableError(`this cell needs the heavy tier (${reason}), which cannot start: ${(e as Error).message}. The sandbox stays on the nano tier; nothing of the cell ran`, { cause: e });
    }
    this.moving = heavy;
    const stopIfEnded = () => {
      if (this.closed !== undefined) throw new SandboxClosedError(this.closed);
      if (signal?.aborted) throw new AbortedError("moving the sandbox to the heavy tier was aborted by the caller's signal; it stays on the nano tier and nothing of the cell ran");
    };
    try {
      stopIfEnded();
      await this.copyFiles(nano, heavy, reason);
      for (const cell of this.cells) {
        stopIfEnded();
        await this.replay(cell, heavy, reason, signal);
      }
      stopIfEnded();
      // Again: the replay may have written files (appended to a log, rewritten a result); they
      // end as the nano sandbox had them.
      await this.copyFiles(nano, heavy, reason);
      stopIfEnded();
    } catch (e) {
      this.moving = undefined;
      await heavy.dispose("moving to the heavy tier failed");
      throw e;
    }
    this.moving = undefined;
    this.networkLog.switchTo(heavy.network);
    this.heavy = heavy;
    this.nano = undefined;
    this.cells.length = 0;
    await nano.dispose("moved to the heavy tier");
  }

  private async replay(cell: Cell, heavy: Engine, reason: string, signal: AbortSignal | undefined): Promise<void> {
    const what = `this cell needs the heavy tier (${reason}); moving there replays the cells that ran on the nano tier, and cell ${cell.n} (runCode call ${cell.n} of this sandbox)`;
    const stays = "The sandbox stays on the nano tier as it was; nothing of this cell ran";
    let r: EngineRunResult;
    try {
      // Output discarded: it was returned when the cell first ran.
      r = await heavy.run(cell.code, { timeoutMs: cell.timeoutMs, signal });
    } catch (e) {
      if (e instanceof AbortedError) throw e;
      throw new ReplayError(`${what} failed there: ${(e as Error).message}. ${stays}`, { cell: cell.n, cause: e });
    }
    if (r.error) {
      throw new ReplayError(`${what} raised ${r.error.name}: ${r.error.message} there (it ran without error on the nano tier). ${stays}`, { cell: cell.n, guestError: r.error });
    }
    if (r.limitHit === "timeoutMs") {
      throw new ReplayError(`${what} did not finish there within its time limit of ${cell.timeoutMs} ms. ${stays}`, { cell: cell.n });
    }
  }

  /** Copy what the nano sandbox holds under /home/user and /tmp into the heavy one (regular files and directories; mounts are on both). */
  private async copyFiles(from: Engine, to: Engine, reason: string): Promise<void> {
    const { maxCopyEntries, mountPaths } = this.config;
    const tooMany = () => new ReplayError(`this cell needs the heavy tier (${reason}), but the nano sandbox lists more than ${maxCopyEntries} files to copy there; the sandbox stays on the nano tier`);
    try {
      await walkFiles(from, { mountPaths, maxEntries: maxCopyEntries, tooMany }, async (e) => (e.type === "dir" ? to.makeDir(e.path) : to.writeFile(e.path, await from.readFile(e.path))));
    } catch (e) {
      if (!(e instanceof FileSystemError)) throw e;
      throw new ReplayError(`this cell needs the heavy tier (${reason}), but copying the sandbox's files there failed: ${e.message}. The sandbox stays on the nano tier; nothing of the cell ran`, { cause: e });
    }
  }
}

function checkWritable(p: string): void {
  if (WRITABLE_ROOTS.some((r) => p === r || p.startsWith(`${r}/`))) return;
  throw new FileSystemError(p, "EROFS", `read-only in a tier "auto" sandbox: only /home/user and /tmp take writes, as on the heavy tier it may move to`);
}
