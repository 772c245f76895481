// The server's snapshots: each belongs to the API key that made it (another key's is a 404, as
// for sandboxes), counts against that key's maxSnapshots, and expires after the server's
// snapshot TTL unless deleted first. Restoring one starts a new sandbox and leaves the snapshot
// (it restores any number of times); deleting removes its saved state. Held in memory: a server
// restart loses them (saved state on disk across restarts is future work, --state-dir).
import { randomBytes } from "node:crypto";
import type { SandboxSnapshot } from "../index.js";
import { HttpError } from "./http-errors.js";
import type { Principal } from "./keys.js";

export interface SnapshotEntry {
  readonly id: string;
  readonly owner: string;
  /** The sandbox it was taken of. */
  readonly sandboxId: string;
  readonly snapshot: SandboxSnapshot;
  readonly createdAt: number;
  readonly expiresAt: number;
  timer: NodeJS.Timeout;
}

export class SnapshotStore {
  private readonly entries = new Map<string, SnapshotEntry>();

  constructor(private readonly ttlMs: number) {}

  /** Take one of the key's snapshot places for `take` (which makes the snapshot), or 429. */
  async add(who: Principal, sandboxId: string, take: () => Promise<SandboxSnapshot>): Promise<SnapshotEntry> {
    const held = [...this.entries.values()].filter((e) => e.owner === who.name).length + this.reserved(who.name);
    if (held >= who.quota.maxSnapshots) {
      throw new HttpError(429, "QUOTA_EXCEEDED", `this API key may keep ${who.quota.maxSnapshots} snapshots (quota maxSnapshots); delete one first`, { quota: "maxSnapshots", value: who.quota.maxSnapshots });
    }
    this.reserving.set(who.name, this.reserved(who.name) + 1);
    try {
      const snapshot = await take();
      const now = Date.now();
      const id = `snap_${randomBytes(12).toString("hex")}`;
      const timer = setTimeout(() => void this.remove(id), this.ttlMs);
      timer.unref();
      const entry: SnapshotEntry = { id, owner: who.name, sandboxId, snapshot, createdAt: now, expiresAt: now + this.ttlMs, timer };
      this.entries.set(id, entry);
      return entry;
    } finally {
      this.reserving.set(who.name, this.reserved(who.name) - 1);
    }
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
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled([...this.entries.keys()].map((id) => this.remove(id)));
  }

  private readonly reserving = new Map<string, number>();
  private reserved(owner: string): number {
    return this.reserving.get(owner) ?? 0;
  }
}
