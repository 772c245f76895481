// The server's snapshots: each belongs to the API key that made it (another key's is a 404, as
// for sandboxes), counts against that key's maxSnapshots, and expires after the server's
// snapshot TTL unless deleted first. Restoring one starts a new sandbox and leaves the snapshot
// (it restores any number of times); deleting removes its saved state. With a state directory
// (state.ts) each is written to disk when taken, deleted from it with the snapshot, and loaded
// back at start (same owner, same expiry); without one, a server restart loses them. On disk a
// snapshot's size is known, so a key's maxSnapshotMb bounds the disk its snapshots take (a
// snapshot kept in memory only, without a state directory, has no measured size).
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { SandboxSnapshot } from "../index.js";
import { HttpError } from "./http-errors.js";
import type { Principal } from "./keys.js";
import type { StateDir, StateEntry } from "./state.js";
import { duBytes } from "../engines/heavy/image.js";

/** What a snapshot's entry in the state directory keeps beside the snapshot itself. */
const snapshotInfoSchema = z.strictObject({
  owner: z.string().min(1).max(256),
  sandboxId: z.string().max(64),
  createdAt: z.number().int().min(0),
  expiresAt: z.number().int().min(0),
});

export interface SnapshotEntry {
  readonly id: string;
  readonly owner: string;
  /** The sandbox it was taken of. */
  readonly sandboxId: string;
  readonly snapshot: SandboxSnapshot;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** Bytes it takes in the state directory; undefined when it is not written there. */
  readonly bytes?: number | undefined;
  timer: NodeJS.Timeout;
}

/** What a clustered server tells the catalog of its snapshots (cluster/index.ts). */
export interface SnapshotHooks {
  /** Take a place in the key's snapshot quota across the cluster (429 when it is full) before the snapshot is taken. */
  reserve(who: Principal): Promise<{ commit(e: SnapshotEntry, persisted: boolean): Promise<void>; release(): Promise<void> }>;
  removed(id: string, owner: string): Promise<void>;
}

/** A snapshot as the API shows it (`GET /snapshots`, and the cluster catalog's copy). */
export function snapshotInfo(s: SnapshotEntry) {
  return {
    id: s.id,
    sandboxId: s.sandboxId,
    tier: s.snapshot.options.tier,
    language: s.snapshot.options.language,
    createdAt: new Date(s.createdAt).toISOString(),
    expiresAt: new Date(s.expiresAt).toISOString(),
    sizeBytes: s.bytes ?? s.snapshot.sizeBytes(),
  };
}

export class SnapshotStore {
  private readonly entries = new Map<string, SnapshotEntry>();
  /** Cluster mode: the catalog is told of every snapshot made and removed here. */
  hooks: SnapshotHooks | undefined;

  constructor(
    private readonly ttlMs: number,
    private readonly state?: StateDir | undefined,
    private readonly log: (line: string) => void = () => undefined,
  ) {}

  /**
   * Load the snapshots the state directory holds (at start): each with its owner and expiry; an
   * expired one is deleted, one that fails its checks, cannot be loaded or `admit` refuses (the
   * server's mount roots) is moved aside (logged).
   */
  async load(admit: (snapshot: SandboxSnapshot) => void = () => undefined): Promise<void> {
    if (!this.state) return;
    for (const e of await this.state.entries("snapshots")) await this.loadOne(this.state, e, admit);
  }

  /**
   * Cluster mode: the snapshot `id` from the shared state directory (written by a node that is
   * gone, or by this one before a restart), as the catalog gave it to this node; undefined when
   * the directory has no good copy.
   */
  async adopt(id: string, admit: (snapshot: SandboxSnapshot) => void = () => undefined): Promise<SnapshotEntry | undefined> {
    const have = this.entries.get(id);
    if (have || !this.state) return have;
    const e = await this.state.entry("snapshots", id);
    if (e) await this.loadOne(this.state, e, admit);
    return this.entries.get(id);
  }

  private async loadOne(state: StateDir, e: StateEntry, admit: (snapshot: SandboxSnapshot) => void): Promise<void> {
    try {
      const info = snapshotInfoSchema.parse(e.info);
      if (info.expiresAt <= Date.now()) {
        state.remove("snapshots", e.id);
        return;
      }
      const snapshot = await SandboxSnapshot.load(e.dir);
      admit(snapshot);
      this.track({ id: e.id, owner: info.owner, sandboxId: info.sandboxId, snapshot, createdAt: info.createdAt, expiresAt: info.expiresAt, bytes: duBytes(e.dir) });
    } catch (err) {
      state.refuse("snapshots", e.id, (err as Error).message);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  /** Why a snapshot id the state directory had was not loaded (a 404 says it), when it was refused. */
  refusedReason(id: string): string | undefined {
    return this.state?.refusedReason("snapshots", id);
  }

  /** Take one of the key's snapshot places for `take` (which makes the snapshot), or 429. */
  async add(who: Principal, sandboxId: string, take: () => Promise<SandboxSnapshot>): Promise<SnapshotEntry> {
    const held = [...this.entries.values()].filter((e) => e.owner === who.name).length + this.reserved(who.name);
    if (held >= who.quota.maxSnapshots) {
      throw new HttpError(429, "QUOTA_EXCEEDED", `this API key may keep ${who.quota.maxSnapshots} snapshots (quota maxSnapshots); delete one first`, { quota: "maxSnapshots", value: who.quota.maxSnapshots });
    }
    // Cluster mode: the key's snapshots on every node count (a place is taken in etcd first).
    const place = await this.hooks?.reserve(who);
    this.reserving.set(who.name, this.reserved(who.name) + 1);
    try {
      let snapshot = await take();
      const now = Date.now();
      const id = `snap_${randomBytes(12).toString("hex")}`;
      const info: z.output<typeof snapshotInfoSchema> = { owner: who.name, sandboxId, createdAt: now, expiresAt: now + this.ttlMs };
      let bytes: number | undefined;
      if (this.state) ({ snapshot, bytes } = await this.persist(id, info, snapshot));
      // Not written to the state directory: what it takes where it is (a checkpoint on disk, a nano history in memory).
      bytes ??= snapshot.sizeBytes();
      const used = this.list(who.name).reduce((n, e) => n + (e.bytes ?? 0), 0);
      const cap = who.quota.maxSnapshotMb * 1024 * 1024;
      if (used + bytes > cap) {
        await snapshot.remove().catch(() => undefined);
        this.state?.remove("snapshots", id);
        throw new HttpError(
          429,
          "QUOTA_EXCEEDED",
          `this snapshot takes ${(bytes / 2 ** 20).toFixed(1)} MiB and this API key's snapshots already take ${(used / 2 ** 20).toFixed(1)} of its ${who.quota.maxSnapshotMb} MiB (quota maxSnapshotMb); delete one first`,
          { quota: "maxSnapshotMb", value: who.quota.maxSnapshotMb },
        );
      }
      const entry = this.track({ id, ...info, snapshot, bytes });
      if (place) {
        try {
          // Its size against the key's bytes across the cluster, and its catalog record, in one transaction.
          await place.commit(entry, this.state?.has("snapshots", id) ?? false);
        } catch (e) {
          this.entries.delete(id);
          clearTimeout(entry.timer);
          await snapshot.remove().catch(() => undefined);
          this.state?.remove("snapshots", id);
          throw e;
        }
      }
      return entry;
    } finally {
      this.reserving.set(who.name, this.reserved(who.name) - 1);
      await place?.release();
    }
  }

  /**
   * Write the snapshot into the state directory and load it back from there (what a restart
   * would load). One whose sandbox cannot be written (network secrets, a backend without it) is
   * kept in memory only, with a log line; a failure once its payload moved loses it (thrown).
   */
  private async persist(id: string, info: z.output<typeof snapshotInfoSchema>, snapshot: SandboxSnapshot): Promise<{ snapshot: SandboxSnapshot; bytes?: number }> {
    const state = this.state as StateDir;
    const refusal = snapshot.persistRefusal();
    if (refusal) {
      this.log(`state: snapshot ${id} is kept in memory only (a restart loses it): ${refusal}`);
      return { snapshot };
    }
    try {
      const dir = await state.write("snapshots", id, info, (tmp) => snapshot.persist(tmp));
      return { snapshot: await SandboxSnapshot.load(dir), bytes: duBytes(dir) };
    } catch (e) {
      await snapshot.remove().catch(() => undefined);
      state.remove("snapshots", id);
      throw e;
    }
  }

  private track(e: Omit<SnapshotEntry, "timer">): SnapshotEntry {
    const timer = setTimeout(() => void this.remove(e.id), Math.max(0, e.expiresAt - Date.now()));
    timer.unref();
    const entry: SnapshotEntry = { ...e, timer };
    this.entries.set(e.id, entry);
    return entry;
  }

  /** Whether the snapshot `id` is held here. */
  has(id: string): boolean {
    return this.entries.has(id);
  }

  /** The entry, if it exists and belongs to `owner`. */
  get(owner: string, id: string): SnapshotEntry | undefined {
    const e = this.entries.get(id);
    return e && e.owner === owner ? e : undefined;
  }

  list(owner: string): SnapshotEntry[] {
    return [...this.entries.values()].filter((e) => e.owner === owner).sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  async remove(id: string): Promise<void> {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    clearTimeout(e.timer);
    await e.snapshot.remove();
    this.state?.remove("snapshots", id);
    await this.hooks?.removed(id, e.owner);
  }

  /** At shutdown: snapshots on disk stay there for the next start; the others are deleted. */
  async closeAll(): Promise<void> {
    const kept = this.state;
    await Promise.allSettled(
      [...this.entries.values()].map(async (e) => {
        if (kept && kept.has("snapshots", e.id)) {
          clearTimeout(e.timer);
          this.entries.delete(e.id);
          return;
        }
        await this.remove(e.id);
      }),
    );
  }

  private readonly reserving = new Map<string, number>();
  private reserved(owner: string): number {
    return this.reserving.get(owner) ?? 0;
  }
}
