// The server's sandboxes: who owns each, per-key and global caps, idle expiry, and shutdown.
// A global cap bounds live sandboxes of every tier (each is a worker process of ~200 MB, or a
// gVisor sandbox of ~120 MB plus its guest's memory); heavy sandboxes also take a slot of their
// own, smaller cap (runsc processes, a cgroup, a guest that may fill limits.memoryMb). A create
// past a cap waits in that cap's FIFO queue (bounded in length and time), then is refused with 429.
// Pause: a sandbox idle past its timeout (idleAction "pause", the default) or asked to pause is
// saved (its tier's snapshot) and its process ended: it gives its global and heavy slots back but
// still counts against its key's maxSandboxes. The next request that uses it resumes it (slots
// taken again, queueing as a create does); a paused sandbox is deleted after the pause TTL. A
// sandbox that cannot be saved (a nano or tier auto-on-nano history that cannot be replayed) is
// killed at idle instead.
// With a state directory (state.ts) a pause also writes the sandbox's saved state to disk, a resume
// or delete removes it, and at start the paused sandboxes on disk come back, paused, with their ids;
// at shutdown (`onShutdown: "pause"`) running sandboxes are paused and written rather than killed.
import { z } from "zod";
import { Sandbox, SandboxSnapshot, type SandboxOptions } from "../index.js";
import { HttpError } from "./http-errors.js";
import type { Principal } from "./keys.js";
import type { ServerMetrics } from "./metrics.js";
import type { StateDir, StateEntry } from "./state.js";

/** What a paused sandbox's entry in the state directory keeps beside its saved state. */
const pausedInfoSchema = z.strictObject({
  owner: z.string().min(1).max(256),
  idleTimeoutMs: z.number().int().positive(),
  idleAction: z.enum(["pause", "kill"]),
  createdAt: z.number().int().min(0),
  pausedAt: z.number().int().min(0),
  expiresAt: z.number().int().min(0),
});

export interface RegistryOptions {
  /** Live sandboxes across all keys and tiers. */
  maxSandboxes: number;
  /** Live heavy-tier sandboxes across all keys (each also holds one of the maxSandboxes slots). */
  maxHeavySandboxes: number;
  /** Create requests that may wait for a slot; more are refused at once. */
  maxQueue: number;
  /** How long a create waits for a slot before 429. */
  queueTimeoutMs: number;
  /** Sandboxes starting at once. Cold starts are CPU-bound: more than the cores only slows each. */
  maxConcurrentStarts: number;
  /** How long a paused sandbox is kept before it is deleted (default 24 h). */
  pausedTtlMs?: number;
  /** Where paused sandboxes are written so they outlive the process (absent: memory only). */
  state?: StateDir | undefined;
  /** Cluster mode: the key's quota across nodes and the catalog of where each sandbox lives (cluster/). */
  cluster?: ClusterHooks | undefined;
  log?: ((line: string) => void) | undefined;
}

export type IdleAction = "pause" | "kill";

/**
 * What a clustered server's registry tells the cluster (cluster/index.ts): a create first takes
 * the key's place across every node (reserve: 429 at the quota, 503 without the store), then
 * names the node that holds each sandbox as it runs, pauses and goes.
 */
export interface ClusterHooks {
  reserve(who: Principal): Promise<{ commit(entry: Entry): Promise<void>; release(): Promise<void> }>;
  running(entry: Entry): Promise<void>;
  paused(entry: Entry): Promise<void>;
  removed(entry: Entry): Promise<void>;
}

export interface Entry {
  /** The sandbox's own id (sb.id): the server and the library name it alike. */
  readonly id: string;
  readonly owner: string;
  readonly sandbox: Sandbox;
  readonly createdAt: number;
  lastActiveAt: number;
  idleTimeoutMs: number;
  /** What the idle timeout does. */
  idleAction: IdleAction;
  /** Set while paused (sb.pause(): saved, its process ended): when, and when it is deleted unless resumed. */
  paused?: { at: number; expiresAt: number } | undefined;
  /** A pause or resume under way (requests wait for it). */
  changing?: Promise<void> | undefined;
  /** Operations in progress; an entry never expires while one runs. */
  busy: number;
  timer: NodeJS.Timeout | undefined;
  /** Whether it holds its global (and heavy) slots: not while paused, nor once closed. */
  holdsSlot: boolean;
  /** Whether it counts against its key's maxSandboxes (until deleted or closed). */
  counted: boolean;
  /** Paused, with its saved state in the state directory (a restart brings it back). */
  persisted?: boolean | undefined;
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** A counting semaphore with a bounded FIFO queue whose waiters give up after a deadline. */
class Slots {
  used = 0;
  readonly waiters: Waiter[] = [];

  constructor(
    private readonly max: number,
    private readonly maxQueue: number,
    private readonly refuse: () => HttpError,
  ) {}

  /** Take a slot, waiting until `deadline` (Date.now() ms) at most. */
  acquire(deadline: number): Promise<void> {
    if (this.used < this.max && this.waiters.length === 0) {
      this.used++;
      return Promise.resolve();
    }
    if (this.waiters.length >= this.maxQueue) return Promise.reject(this.refuse());
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(this.refuse());
        }, Math.max(0, deadline - Date.now())),
      };
      this.waiters.push(w);
    });
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve(); // the slot passes straight to the next waiter
    } else this.used--;
  }

  rejectAll(e: () => Error): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(e());
    }
  }
}

export class SandboxRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly perKey = new Map<string, number>();
  private readonly slots: Slots;
  private readonly heavySlots: Slots;
  private readonly pending = new Set<Promise<unknown>>();
  private starting = 0;
  private readonly startWaiters: (() => void)[] = [];
  private closing = false;

  constructor(
    private readonly opts: RegistryOptions,
    private readonly metrics: ServerMetrics,
  ) {
    this.slots = new Slots(opts.maxSandboxes, opts.maxQueue, () => capacity(`${opts.maxSandboxes} live sandboxes`, opts.queueTimeoutMs));
    this.heavySlots = new Slots(opts.maxHeavySandboxes, opts.maxQueue, () => capacity(`${opts.maxHeavySandboxes} live heavy-tier sandboxes`, opts.queueTimeoutMs));
  }

  get size(): number {
    return this.entries.size;
  }

  /** Running sandboxes (holding a slot: not paused, not closed). */
  get running(): number {
    return [...this.entries.values()].filter((e) => e.holdsSlot).length;
  }

  /** Whether the sandbox `id` is held here, and how: "running" (or closed, or changing), "paused", or false. */
  holds(id: string): "running" | "paused" | false {
    const e = this.entries.get(id);
    if (!e) return false;
    return e.paused && !e.changing ? "paused" : "running";
  }

  /**
   * Cluster mode: drop a paused sandbox another node took over (its saved state, on the shared
   * directory, is that node's now): forgotten without deleting anything or telling the catalog.
   */
  forget(id: string): void {
    const e = this.entries.get(id);
    if (!e || !e.paused || e.changing) return;
    clearTimeout(e.timer);
    this.entries.delete(id);
    if (e.counted) {
      e.counted = false;
      this.perKey.set(e.owner, (this.perKey.get(e.owner) ?? 1) - 1);
    }
  }

  /** Live heavy-tier sandboxes (holding a heavy slot). */
  get heavy(): number {
    return [...this.entries.values()].filter((e) => e.holdsSlot && holdsHeavySlot(e.sandbox.options)).length;
  }

  get queued(): number {
    return this.slots.waiters.length + this.heavySlots.waiters.length;
  }

  async create(who: Principal, options: SandboxOptions, idleTimeoutMs: number, idleAction: IdleAction = "pause"): Promise<Entry> {
    return this.admit(who, options, idleTimeoutMs, idleAction, () => this.throttledStart(options));
  }

  /** A new sandbox from a snapshot, under the same caps and quotas as a create. */
  restore(who: Principal, snapshot: SandboxSnapshot, idleTimeoutMs: number, idleAction: IdleAction = "pause"): Promise<Entry> {
    return this.admit(who, snapshot.options, idleTimeoutMs, idleAction, () => this.throttled(() => Sandbox.restore(snapshot)));
  }

  /**
   * Save the sandbox and end its process; it gives its slots back (not its place in the key's
   * quota). Waits for operations in progress (the snapshot takes the sandbox's lock). Throws what
   * the snapshot throws (e.g. TierUnavailableError), the sandbox untouched then.
   */
  pause(entry: Entry): Promise<void> {
    return this.change(entry, async () => {
      if (entry.paused || !this.entries.has(entry.id)) return;
      await entry.sandbox.pause();
      clearTimeout(entry.timer);
      const at = Date.now();
      entry.paused = { at, expiresAt: at + (this.opts.pausedTtlMs ?? 24 * 3600_000) };
      this.metrics.sandboxesPaused.inc();
      this.releaseSlots(entry);
      this.expireWhenPaused(entry);
      await this.persist(entry);
      if (this.entries.has(entry.id)) await this.opts.cluster?.paused(entry);
    });
  }

  /** A paused sandbox nobody comes back to is deleted at its expiry. */
  private expireWhenPaused(entry: Entry): void {
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => void this.remove(entry).catch(() => undefined), Math.max(0, (entry.paused?.expiresAt ?? 0) - Date.now()));
    entry.timer.unref();
  }

  /**
   * Write a paused sandbox's saved state into the state directory. One that cannot be written
   * (network secrets) stays paused in memory, with a log line; one whose write failed part-way has
   * lost its saved state and is deleted.
   */
  private async persist(entry: Entry): Promise<void> {
    const state = this.opts.state;
    const paused = entry.paused;
    if (!state || !paused) return;
    const info: z.output<typeof pausedInfoSchema> = { owner: entry.owner, idleTimeoutMs: entry.idleTimeoutMs, idleAction: entry.idleAction, createdAt: entry.createdAt, pausedAt: paused.at, expiresAt: paused.expiresAt };
    try {
      await entry.sandbox.persistPaused((snap) => state.write("paused", entry.id, info, (dir) => snap.persist(dir)));
      entry.persisted = true;
    } catch (e) {
      const log = this.opts.log ?? (() => undefined);
      if (!entry.sandbox.closed) {
        log(`state: paused sandbox ${entry.id} is kept in memory only (a restart loses it): ${(e as Error).message}`);
        return;
      }
      log(`state: paused sandbox ${entry.id} could not be written to disk and is deleted: ${(e as Error).message}`);
      // Not this.remove(): it waits for the pause this runs in. The sandbox is killed already.
      clearTimeout(entry.timer);
      this.entries.delete(entry.id);
      void this.release(entry);
    }
  }

  /**
   * At start: the paused sandboxes the state directory holds, back with their ids, owners and
   * expiry (an expired one is deleted; one that fails its checks, cannot load, or `admit` refuses
   * — the server's mount roots — is moved aside).
   * They count against their keys' maxSandboxes as before the restart.
   */
  async load(admit: (snapshot: SandboxSnapshot) => void = () => undefined): Promise<void> {
    const state = this.opts.state;
    if (!state) return;
    for (const e of await state.entries("paused")) await this.loadPaused(state, e, admit);
  }

  /**
   * Cluster mode: the paused sandbox `id` from the shared state directory, which another node
   * (gone now) or this one before a restart wrote; the catalog has given it to this node. Returns
   * its entry, or undefined when the directory has no good copy (refused: why is logged).
   */
  async adoptPaused(id: string, admit: (snapshot: SandboxSnapshot) => void = () => undefined): Promise<Entry | undefined> {
    const state = this.opts.state;
    const have = this.entries.get(id);
    if (have || !state) return have;
    const e = await state.entry("paused", id);
    if (!e) return undefined;
    await this.loadPaused(state, e, admit);
    return this.entries.get(id);
  }

  private async loadPaused(state: StateDir, e: StateEntry, admit: (snapshot: SandboxSnapshot) => void): Promise<void> {
    try {
      const info = pausedInfoSchema.parse(e.info);
      if (info.expiresAt <= Date.now()) {
        state.remove("paused", e.id);
        return;
      }
      const saved = await SandboxSnapshot.load(e.dir);
      admit(saved);
      const sandbox = Sandbox.fromPaused(e.id, saved);
      this.watch(sandbox);
      const entry: Entry = {
        id: e.id,
        owner: info.owner,
        sandbox,
        createdAt: info.createdAt,
        lastActiveAt: info.pausedAt,
        idleTimeoutMs: info.idleTimeoutMs,
        idleAction: info.idleAction,
        paused: { at: info.pausedAt, expiresAt: info.expiresAt },
        busy: 0,
        timer: undefined,
        holdsSlot: false,
        counted: true,
        persisted: true,
      };
      this.entries.set(entry.id, entry);
      this.perKey.set(entry.owner, (this.perKey.get(entry.owner) ?? 0) + 1);
      this.expireWhenPaused(entry);
    } catch (err) {
      state.refuse("paused", e.id, (err as Error).message);
    }
  }

  /** Why a sandbox id the state directory had was not loaded (a 404 says it), when it was refused. */
  refusedReason(id: string): string | undefined {
    return this.opts.state?.refusedReason("paused", id);
  }

  /** Bring a paused sandbox back (its slots first, queueing as a create does); a no-op when it runs. */
  resume(entry: Entry): Promise<void> {
    if (!entry.paused && !entry.changing) return Promise.resolve();
    return this.change(entry, async () => {
      const paused = entry.paused;
      if (!paused || !this.entries.has(entry.id)) return;
      clearTimeout(entry.timer);
      await this.takeSlots(entry.sandbox.options);
      try {
        await this.throttled(() => entry.sandbox.resume());
      } catch (e) {
        this.giveSlots(entry.sandbox.options);
        entry.timer = setTimeout(() => void this.remove(entry).catch(() => undefined), Math.max(0, paused.expiresAt - Date.now()));
        entry.timer.unref();
        throw e;
      }
      entry.paused = undefined;
      if (entry.persisted) {
        // Running again: what was on disk is stale (and its payload used up by the restore).
        entry.persisted = false;
        this.opts.state?.remove("paused", entry.id);
      }
      entry.holdsSlot = true;
      entry.lastActiveAt = Date.now();
      this.metrics.sandboxesResumed.inc();
      this.arm(entry);
      await this.opts.cluster?.running(entry);
    });
  }

  /** One pause or resume at a time per sandbox; requests meanwhile wait for it. */
  private async change(entry: Entry, fn: () => Promise<void>): Promise<void> {
    while (entry.changing) await entry.changing.catch(() => undefined);
    const p = fn();
    entry.changing = p;
    try {
      await p;
    } finally {
      if (entry.changing === p) entry.changing = undefined;
    }
  }

  /** Take the key's quota and the server's slots for a sandbox `start` makes, then track it. */
  private async admit(who: Principal, options: SandboxOptions, idleTimeoutMs: number, idleAction: IdleAction, start: () => Promise<Sandbox>): Promise<Entry> {
    if (this.closing) throw shuttingDown();
    const held = this.perKey.get(who.name) ?? 0;
    if (held >= who.quota.maxSandboxes) {
      throw new HttpError(429, "QUOTA_EXCEEDED", `this API key may hold ${who.quota.maxSandboxes} live sandboxes (quota maxSandboxes); delete one first`, { quota: "maxSandboxes", value: who.quota.maxSandboxes });
    }
    this.perKey.set(who.name, held + 1);
    const heavy = holdsHeavySlot(options);
    let slot = false;
    let heavySlot = false;
    let reservation: Awaited<ReturnType<ClusterHooks["reserve"]>> | undefined;
    const work = (async () => {
      // The key's place across the cluster before any slot or CPU is spent on the start.
      if (this.opts.cluster) reservation = await this.opts.cluster.reserve(who);
      // Heavy first: a heavy create waiting for its own cap does not sit on a global slot.
      const deadline = Date.now() + this.opts.queueTimeoutMs;
      if (heavy) {
        await this.heavySlots.acquire(deadline);
        heavySlot = true;
      }
      await this.slots.acquire(deadline);
      slot = true;
      if (this.closing) throw shuttingDown();
      const t0 = performance.now();
      const sandbox = await start();
      this.metrics.startSeconds.observe((performance.now() - t0) / 1000);
      this.metrics.sandboxesCreated.inc();
      this.watch(sandbox);
      if (this.closing) {
        await sandbox.kill();
        throw shuttingDown();
      }
      const now = Date.now();
      const entry: Entry = { id: sandbox.id, owner: who.name, sandbox, createdAt: now, lastActiveAt: now, idleTimeoutMs, idleAction, busy: 0, timer: undefined, holdsSlot: true, counted: true };
      if (reservation) {
        // Named in the catalog before anyone hears of it: the next request may reach another node.
        try {
          await reservation.commit(entry);
        } catch (e) {
          await sandbox.kill();
          throw e;
        }
      }
      this.entries.set(entry.id, entry);
      this.arm(entry);
      return entry;
    })();
    this.pending.add(work);
    try {
      return await work;
    } catch (e) {
      this.perKey.set(who.name, (this.perKey.get(who.name) ?? 1) - 1);
      await reservation?.release().catch(() => undefined);
      if (slot) this.slots.release();
      if (heavySlot) this.heavySlots.release();
      throw e;
    } finally {
      this.pending.delete(work);
    }
  }

  /** The entry, if it exists and belongs to `owner`; otherwise undefined (callers answer 404 either way). */
  get(owner: string, id: string): Entry | undefined {
    const e = this.entries.get(id);
    return e && e.owner === owner ? e : undefined;
  }

  list(owner: string): Entry[] {
    return [...this.entries.values()].filter((e) => e.owner === owner).sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  /** Run an operation on a sandbox: counts as activity, holds off expiry while it runs; resumes a paused one first. */
  async use<T>(entry: Entry, fn: (sb: Sandbox) => Promise<T>): Promise<T> {
    await this.resume(entry);
    entry.busy++;
    entry.lastActiveAt = Date.now();
    try {
      return await fn(entry.sandbox);
    } finally {
      entry.busy--;
      entry.lastActiveAt = Date.now();
      if (entry.sandbox.closed) void this.release(entry);
      if (this.entries.has(entry.id)) this.arm(entry);
    }
  }

  /** Reset the idle timer, optionally with a new timeout. */
  touch(entry: Entry, idleTimeoutMs?: number): void {
    if (idleTimeoutMs !== undefined) entry.idleTimeoutMs = idleTimeoutMs;
    entry.lastActiveAt = Date.now();
    this.arm(entry);
  }

  async remove(entry: Entry): Promise<void> {
    clearTimeout(entry.timer);
    this.entries.delete(entry.id);
    try {
      await entry.changing?.catch(() => undefined);
      await entry.sandbox.kill(); // a paused one deletes what it saved
      if (entry.persisted) this.opts.state?.remove("paused", entry.id);
    } finally {
      // Out of the cluster's catalog before the caller hears of it (the key's place is free then).
      await this.release(entry);
    }
  }

  /**
   * Stop taking creates, refuse the queue, and end every sandbox (and any still starting). With
   * `onShutdown: "pause"` and a state directory, idle running sandboxes are paused and written to
   * disk first (those that cannot be, or have a request in progress, are killed) and the paused
   * ones on disk are left there for the next start; otherwise every sandbox is killed.
   */
  async closeAll(onShutdown: "pause" | "kill" = "kill"): Promise<void> {
    this.closing = true;
    this.heavySlots.rejectAll(shuttingDown);
    this.slots.rejectAll(shuttingDown);
    if (onShutdown === "pause" && this.opts.state) {
      await Promise.allSettled([...this.entries.values()].map((e) => this.keepForRestart(e)));
    }
    await Promise.allSettled([...this.entries.values()].map((e) => this.remove(e)));
    await Promise.allSettled([...this.pending]);
    await Promise.allSettled([...this.entries.values()].map((e) => this.remove(e)));
  }

  /** At a "pause" shutdown: pause and write `entry` (unless it is already on disk or busy), then forget it without deleting what it saved. */
  private async keepForRestart(entry: Entry): Promise<void> {
    // A request in progress (maybe a loop until its time limit) would hold the shutdown up, and a
    // cell stopped part-way cannot be replayed anyway: such a sandbox is killed, as without a state dir.
    if (entry.busy > 0) return;
    if (!entry.paused && !entry.sandbox.closed) {
      try {
        await this.pause(entry);
      } catch (e) {
        (this.opts.log ?? (() => undefined))(`shutdown: sandbox ${entry.id} could not be paused and is killed: ${(e as Error).message}`);
      }
    } else await entry.changing?.catch(() => undefined);
    if (!entry.persisted) return; // killed with the rest
    clearTimeout(entry.timer);
    this.entries.delete(entry.id);
  }

  private arm(entry: Entry): void {
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      if (entry.busy > 0 || !this.entries.has(entry.id) || entry.paused) return; // re-armed when the operation ends
      if (entry.idleAction === "pause" && !entry.sandbox.closed) {
        // A sandbox that cannot be saved (or a failed save) ends as "kill" would.
        this.pause(entry).catch(() => {
          this.metrics.sandboxesExpired.inc();
          return this.remove(entry).catch(() => undefined);
        });
        return;
      }
      this.metrics.sandboxesExpired.inc();
      this.remove(entry).catch(() => undefined);
    }, entry.idleTimeoutMs);
    entry.timer.unref();
  }

  private release(entry: Entry): Promise<void> {
    this.releaseSlots(entry);
    if (!entry.counted) return Promise.resolve();
    entry.counted = false;
    this.perKey.set(entry.owner, (this.perKey.get(entry.owner) ?? 1) - 1);
    return this.opts.cluster?.removed(entry).catch(() => undefined) ?? Promise.resolve();
  }

  private releaseSlots(entry: Entry): void {
    if (!entry.holdsSlot) return;
    entry.holdsSlot = false;
    this.giveSlots(entry.sandbox.options);
  }

  private giveSlots(options: SandboxOptions): void {
    this.slots.release();
    if (holdsHeavySlot(options)) this.heavySlots.release();
  }

  /** The slots a sandbox of `options` holds, heavy first (as a create takes them). */
  private async takeSlots(options: SandboxOptions): Promise<void> {
    if (this.closing) throw shuttingDown();
    const deadline = Date.now() + this.opts.queueTimeoutMs;
    const heavy = holdsHeavySlot(options);
    if (heavy) await this.heavySlots.acquire(deadline);
    try {
      await this.slots.acquire(deadline);
    } catch (e) {
      if (heavy) this.heavySlots.release();
      throw e;
    }
  }

  private watch(sandbox: Sandbox): void {
    sandbox.network.watch((e) => this.metrics.networkRequests.inc({ decision: e.decision }));
  }

  private throttledStart(options: SandboxOptions): Promise<Sandbox> {
    // In a burst, a pooled take triggers a refill whose warm-up competes for the same cores as
    // the cold starts behind it (measured: 2x slower bursts); only a lone start uses the pool.
    return this.throttled((lone) => Sandbox.create({ ...options, pool: options.pool && lone }));
  }

  /** Run a start in its turn (at most maxConcurrentStarts at once); `lone`: no other start is under way or waiting. */
  private async throttled<T>(start: (lone: boolean) => Promise<T>): Promise<T> {
    if (this.starting >= this.opts.maxConcurrentStarts) await new Promise<void>((r) => this.startWaiters.push(r));
    else this.starting++;
    const lone = this.starting === 1 && this.startWaiters.length === 0;
    try {
      return await start(lone);
    } finally {
      const next = this.startWaiters.shift();
      if (next) next(); // the start turn passes straight on
      else this.starting--;
    }
  }
}

/**
 * Whether a sandbox takes a heavy-tier slot for its whole life: heavy ones, and tier "auto" ones,
 * which may move to the heavy tier at any run (the library moves them; a slot taken only then
 * could be missing in the middle of a run).
 */
function holdsHeavySlot(options: SandboxOptions): boolean {
  return options.tier === "heavy" || options.tier === "auto";
}

function capacity(what: string, queueTimeoutMs: number): HttpError {
  return new HttpError(429, "CAPACITY", `the server is at its limit of ${what} and no slot freed within ${queueTimeoutMs} ms; retry later`, {}, { "retry-after": "1" });
}

function shuttingDown(): HttpError {
  return new HttpError(503, "SHUTTING_DOWN", "the server is shutting down");
}
