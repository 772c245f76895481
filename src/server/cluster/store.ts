// The cluster's shared state in etcd (`agentbox serve --cluster etcd://…`). Nothing here decides
// by itself: etcd holds who is alive (a lease per node), where each sandbox and snapshot lives
// (the catalog) and each key's count of sandboxes across nodes (quota), and this module reads and
// writes it. Layout, under one prefix (default /agentbox/):
//   nodes/<node>                 the node's NodeInfo, on its lease: gone when the node is
//   sandboxes/<id>               SandboxRecord: which node holds it, its owner, running or paused
//   snapshots/<id>               SnapshotRecord: which node made it, its owner, what `GET /snapshots` shows
//   owners/<sha256(key)>/<id>    one per sandbox the key holds: on the holder's lease while running
//                                (a dead node's sandboxes stop counting when its lease ends), without
//                                one while paused on shared storage (they still count)
//   owners/<sha256(key)>/~<uuid> a create's reservation, on the lease, until it commits or fails
//   snapshot-owners/<sha256(key)>/<id>   one per snapshot the key keeps, its size in bytes (on the
//                                lease unless on shared storage); ~<uuid>: a snapshot being taken
//   gone/<node>                  when a node that left was first seen gone (put once, if absent):
//                                its running sandboxes answer 410 until the retention ends, then
//                                their records go (404); see sweep.ts
// A create takes its place in the key's quota with one transaction: count the key's entries at
// revision R, then put the reservation only if no entry in that range changed after R (etcd's
// compare over a key range). A concurrent create fails the compare and counts again, so two nodes
// can never both take the last place. Deletes cannot make the count wrong in the unsafe direction.
// What comes back from etcd is checked (zod), as any input: a store is shared with other programs.
import { createHash, randomUUID } from "node:crypto";
import { circuitBreaker, ConsecutiveBreaker, ExponentialBackoff, handleWhen, retry } from "cockatiel";
import { Etcd3, isRecoverableError, type IKeyValue, type IRequestOp, type Lease, type Watcher } from "etcd3";
import { z } from "zod";
import { HttpError } from "../http-errors.js";

const nodeInfoSchema = z.strictObject({
  id: z.string().min(1).max(128),
  /** Where other nodes reach this node's API. */
  url: z.string().url().max(512),
  /** Tiers it serves: "nano" always; "heavy" when it has a heavy backend and --max-heavy > 0. */
  tiers: z.array(z.enum(["nano", "heavy"])).max(2),
  maxSandboxes: z.int().min(0),
  maxHeavy: z.int().min(0),
  /** Live (running) sandboxes, heavy ones among them, and creates waiting for a slot. */
  sandboxes: z.int().min(0),
  heavy: z.int().min(0),
  queued: z.int().min(0),
  startedAt: z.int().min(0),
  version: z.string().max(64),
});
export type NodeInfo = z.output<typeof nodeInfoSchema>;

const sandboxRecordSchema = z.strictObject({
  id: z.string().regex(/^sb_[0-9a-f]{24}$/),
  node: z.string().min(1).max(128),
  owner: z.string().min(1).max(256),
  tier: z.enum(["nano", "heavy", "auto"]),
  state: z.enum(["running", "paused"]),
  /** Paused with its saved state in the shared state directory: another node can resume it. */
  persisted: z.boolean(),
  createdAt: z.int().min(0),
});
export type SandboxRecord = z.output<typeof sandboxRecordSchema>;

const snapshotRecordSchema = z.strictObject({
  id: z.string().regex(/^snap_[0-9a-f]{24}$/),
  node: z.string().min(1).max(128),
  owner: z.string().min(1).max(256),
  /** The snapshot's info as `GET /snapshots` shows it (answered from the catalog by any node). */
  info: z.record(z.string(), z.unknown()),
  /** Written to the shared state directory: another node can restore it. */
  persisted: z.boolean(),
});
export type SnapshotRecord = z.output<typeof snapshotRecordSchema>;

const goneMarkSchema = z.strictObject({ since: z.int().min(0) });

/** A record as the store holds it, with the revision it was last written at (what a compare-and-swap compares). */
export interface Versioned<T> {
  value: T;
  modRevision: string;
}

/** Largest value the store accepts back (a record is well under 1 KiB). */
const MAX_VALUE_BYTES = 64 * 1024;

export interface ClusterStoreOptions {
  /** etcd endpoints, `http://host:port`. */
  endpoints: string[];
  /** Key prefix (default "/agentbox/"). */
  prefix?: string;
  nodeId: string;
  /** Seconds a node's lease lives without a keep-alive: how long a dead node's sandboxes keep answering as if it lived. */
  leaseTtlS: number;
  log: (line: string) => void;
}

/** A create's place in its key's quota until it commits (the sandbox exists) or is released (it failed). */
export interface Reservation {
  commit(record: Omit<SandboxRecord, "node" | "state" | "persisted">): Promise<void>;
  release(): Promise<void>;
}

/** A snapshot's place in its key's snapshot quota across the cluster while it is being taken. */
export interface SnapshotReservation {
  /** Record the snapshot (its size counted against the key's byte cap: 429 over it) in one transaction. */
  commit(r: Omit<SnapshotRecord, "node">, bytes: number): Promise<void>;
  release(): Promise<void>;
}

/** The store is down or slower than a request may wait: a clear 503, never a hang. */
export function storeUnavailable(what: string, e: unknown): HttpError {
  return new HttpError(503, "CLUSTER_UNAVAILABLE", `the cluster store (etcd) is unreachable, so this node cannot ${what}: ${(e as Error)?.message ?? String(e)}; retry later`, {}, { "retry-after": "2" });
}

export class ClusterStore {
  private readonly client: Etcd3;
  private readonly prefix: string;
  private lease: Lease | undefined;
  /** The granted lease's id (what puts on it name). */
  private leaseIdValue: string | undefined;
  private readonly nodes = new Map<string, NodeInfo>();
  private readonly records = new Map<string, SandboxRecord>();
  private watchers: Watcher[] = [];
  private closed = false;
  /** Catalog writes that failed (store down) and are retried in order, per sandbox id. */
  private readonly chains = new Map<string, Promise<void>>();
  private info: NodeInfo | undefined;
  private readonly leftListeners = new Set<(id: string) => void>();
  /** When the lease was last granted or kept alive (what leaseFresh() judges by). */
  private keptAt = 0;
  /** Resolves when this node's lease is granted again after it was lost. */
  private regrant: Promise<void> | undefined;

  constructor(private readonly opts: ClusterStoreOptions) {
    this.prefix = opts.prefix ?? "/agentbox/";
    this.client = new Etcd3({
      hosts: opts.endpoints,
      dialTimeout: 2000,
      // Every unary call has a deadline: an unreachable store is a 503, never a request that hangs.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 3000 }),
      // A member that fails is skipped for 1 s (the library's default, 5 s, outlasts an election:
      // every member fails once while a new leader is chosen); a failed call is tried again on
      // another member, with a short backoff, up to 5 times.
      faultHandling: {
        host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(3) }),
        global: retry(handleWhen(isRecoverableError), { maxAttempts: 5, backoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 800 }) }),
      },
    });
  }

  get nodeId(): string {
    return this.opts.nodeId;
  }

  /** Join: grant the lease, publish `info`, and start watching nodes and the catalog. */
  async join(info: NodeInfo): Promise<void> {
    this.info = info;
    // A node restarted after a crash finds its old record until that lease runs out: wait that
    // long. A record still there after it is held by another live process with the same id.
    const deadline = Date.now() + this.opts.leaseTtlS * 1000 + 1000;
    while (!(await this.grant())) {
      if (Date.now() > deadline) {
        throw new Error(
          `cluster: node id ${JSON.stringify(this.opts.nodeId)} is held by another live node (its record nodes/${this.opts.nodeId} stayed on a lease kept alive for over ${this.opts.leaseTtlS} s); give each node its own --node-id`,
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    await this.dropStale();
    await this.syncNodes();
    this.watchers.push(
      await this.client
        .watch()
        .prefix(this.key("nodes/"))
        .create()
        .then((w) =>
          w
            .on("put", (kv) => this.onNode(kv, true))
            .on("delete", (kv) => this.onNode(kv, false))
            .on("connected", () => void this.syncNodes().catch(() => undefined)),
        ),
      await this.client
        .watch()
        .prefix(this.key("sandboxes/"))
        .create()
        .then((w) =>
          w
            .on("put", (kv) => {
              const r = parseRecord(sandboxRecordSchema, kv.value);
              if (r) this.records.set(r.id, r);
            })
            .on("delete", (kv) => this.records.delete(kv.key.toString().slice(this.key("sandboxes/").length))),
        ),
    );
  }

  /**
   * This node starting (again) under its id: what an earlier run of it left in the catalog that
   * this process does not hold (running sandboxes, paused ones not on shared storage, snapshots
   * not on shared storage) is dropped, and its gone mark with them. Paused sandboxes and
   * snapshots on the shared directory stay: this node takes them over when asked.
   */
  private async dropStale(): Promise<void> {
    const me = this.opts.nodeId;
    let dropped = 0;
    for (const e of await this.sandboxEntries()) {
      if (e.value.node === me && !(e.value.state === "paused" && e.value.persisted) && (await this.dropSandbox(e))) dropped++;
    }
    for (const e of await this.snapshotEntries()) {
      if (e.value.node === me && !e.value.persisted && (await this.dropSnapshot(e))) dropped++;
    }
    await this.client.delete().key(this.key(`gone/${me}`));
    if (dropped > 0) this.opts.log(`cluster: dropped ${dropped} stale catalog records an earlier run of node ${me} left`);
  }

  /** Mark node `node` gone since `at` (ms), unless it is marked already: whether this call marked it. */
  async markGone(node: string, at: number): Promise<boolean> {
    const key = Buffer.from(this.key(`gone/${node}`));
    const res = await this.client.kv.txn({
      compare: [{ key, target: "Create", result: "Equal", create_revision: "0" }],
      success: [{ request_put: { key, value: Buffer.from(JSON.stringify({ since: at })) } }],
      failure: [],
    });
    return res.succeeded;
  }

  /** Every gone mark: the node, since when (ms), and the mark's revision. */
  async goneMarks(): Promise<Versioned<{ node: string; since: number }>[]> {
    const dir = this.key("gone/");
    const res = await this.client.kv.range({ key: Buffer.from(dir), range_end: prefixEnd(dir) });
    const out: Versioned<{ node: string; since: number }>[] = [];
    for (const kv of res.kvs) {
      const m = parseRecord(goneMarkSchema, kv.value);
      if (m) out.push({ value: { node: kv.key.toString().slice(dir.length), since: m.since }, modRevision: String(kv.mod_revision) });
    }
    return out;
  }

  /** Remove node `node`'s gone mark, if it is still the one read (`modRevision`). */
  async unmarkGone(node: string, modRevision: string): Promise<void> {
    const key = Buffer.from(this.key(`gone/${node}`));
    await this.client.kv.txn({ compare: [{ key, target: "Mod", result: "Equal", mod_revision: modRevision }], success: [{ request_delete_range: { key } }], failure: [] });
  }

  /** Every sandbox record, with its revision. */
  sandboxEntries(): Promise<Versioned<SandboxRecord>[]> {
    return this.entries("sandboxes/", sandboxRecordSchema);
  }

  /** Every snapshot record, with its revision. */
  snapshotEntries(): Promise<Versioned<SnapshotRecord>[]> {
    return this.entries("snapshots/", snapshotRecordSchema);
  }

  private async entries<T>(dir: string, schema: z.ZodType<T>): Promise<Versioned<T>[]> {
    const start = this.key(dir);
    const res = await this.client.kv.range({ key: Buffer.from(start), range_end: prefixEnd(start) });
    const out: Versioned<T>[] = [];
    for (const kv of res.kvs) {
      const v = parseRecord(schema, kv.value);
      if (v) out.push({ value: v, modRevision: String(kv.mod_revision) });
    }
    return out;
  }

  /** Delete a sandbox's record and its place in its key's count, if the record is still the one read: whether it went. */
  async dropSandbox(e: Versioned<SandboxRecord>): Promise<boolean> {
    const gone = await this.deleteIfUnchanged(`sandboxes/${e.value.id}`, this.ownerKey(e.value.owner, e.value.id), e.modRevision);
    if (gone) this.records.delete(e.value.id);
    return gone;
  }

  /** Delete a snapshot's record (and its share of its key's snapshot quota), if the record is still the one read: whether it went. */
  async dropSnapshot(e: Versioned<SnapshotRecord>): Promise<boolean> {
    return this.deleteIfUnchanged(`snapshots/${e.value.id}`, this.snapshotOwnerKey(e.value.owner, e.value.id), e.modRevision);
  }

  /** Delete the record at `record` (under the prefix) and the quota entry `ownerKey` in one transaction, if the record's mod revision is still `modRevision`: whether they went. */
  private async deleteIfUnchanged(record: string, ownerKey: string, modRevision: string): Promise<boolean> {
    const key = Buffer.from(this.key(record));
    const res = await this.client.kv.txn({
      compare: [{ key, target: "Mod", result: "Equal", mod_revision: modRevision }],
      success: [{ request_delete_range: { key } }, { request_delete_range: { key: Buffer.from(ownerKey) } }],
      failure: [],
    });
    return res.succeeded;
  }

  /**
   * A lease with this node's record on it; when the lease is lost (store unreachable past the TTL)
   * a new one is granted and every running sandbox of this node put back on it. The record is
   * put only where none is (one transaction): false, and the lease revoked, when a record of this
   * node id is still there on another lease (an earlier run's not yet expired, or a second
   * process given the same --node-id), which it must never overwrite.
   */
  private async grant(): Promise<boolean> {
    const lease = this.client.lease(this.opts.leaseTtlS);
    lease.on("lost", (e) => {
      if (this.closed || this.lease !== lease) return;
      this.opts.log(`cluster: lease lost (${e.message}); joining again when etcd answers`);
      this.regrant = this.rejoin().finally(() => {
        this.regrant = undefined;
      });
    });
    lease.on("keepaliveSucceeded", () => {
      if (this.lease === lease) this.keptAt = Date.now();
    });
    const id = await lease.grant();
    if (this.info) {
      const key = Buffer.from(this.key(`nodes/${this.opts.nodeId}`));
      const res = await this.client.kv.txn({
        compare: [{ key, target: "Create", result: "Equal", create_revision: "0" }],
        success: [{ request_put: { key, value: Buffer.from(JSON.stringify(this.info)), lease: id } }],
        failure: [],
      });
      if (!res.succeeded) {
        await lease.revoke().catch(() => undefined);
        return false;
      }
    }
    this.leaseIdValue = id;
    this.keptAt = Date.now();
    this.lease = lease;
    return true;
  }

  private async rejoin(): Promise<void> {
    for (let delay = 500; !this.closed; delay = Math.min(delay * 2, 5000)) {
      try {
        if (!(await this.grant())) throw new Error(`node id ${this.opts.nodeId} is held by another lease`);
        // Back: not gone (the other nodes may have marked it while it was cut off).
        await this.client.delete().key(this.key(`gone/${this.opts.nodeId}`));
        // The sandboxes still here count against their keys again, on the new lease. A record
        // another node took over meanwhile (it adopted a paused sandbox) is left to that node.
        for (const r of await this.listRecords()) {
          if (r.node !== this.opts.nodeId || r.state !== "running") continue;
          await this.lease!.put(this.ownerKey(r.owner, r.id)).value("");
        }
        this.opts.log("cluster: joined again with a new lease");
        return;
      } catch {
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Publish this node's load (capacity and counts); a failure is retried at the next publish. */
  async publish(info: NodeInfo): Promise<void> {
    this.info = info;
    if (this.regrant) return; // published again by the rejoin
    if (!this.lease) throw new Error("this node has no lease yet");
    await this.lease.put(this.key(`nodes/${this.opts.nodeId}`)).value(JSON.stringify(info));
  }

  /**
   * Whether this node surely still holds its lease: kept alive within the TTL by this process's
   * own clock (a process stopped or cut off past the TTL may have lost it, whatever it believes).
   */
  leaseFresh(): boolean {
    return !this.regrant && this.lease !== undefined && Date.now() - this.keptAt < this.opts.leaseTtlS * 1000 - 500;
  }

  /** Live nodes (lease held), as last seen by the watch. */
  liveNodes(): NodeInfo[] {
    return [...this.nodes.values()];
  }

  node(id: string): NodeInfo | undefined {
    return this.nodes.get(id);
  }

  /** Whether `id` holds its lease now, asked of the store (not the watch's view); a node found gone is forgotten at once. */
  async nodeAlive(id: string): Promise<boolean> {
    const alive = (await this.client.get(this.key(`nodes/${id}`)).buffer()) !== null;
    if (!alive && this.nodes.delete(id)) for (const fn of [...this.leftListeners]) fn(id);
    return alive;
  }

  /** A sandbox's record: from the watched cache, else (created a moment ago elsewhere) read from the store. */
  async record(id: string): Promise<SandboxRecord | undefined> {
    const cached = this.records.get(id);
    if (cached) return cached;
    const raw = await this.client.get(this.key(`sandboxes/${id}`)).buffer();
    const r = raw ? parseRecord(sandboxRecordSchema, raw) : undefined;
    if (r) this.records.set(r.id, r);
    return r;
  }

  /** A sandbox's record as the store has it now (not the watched cache). */
  async freshRecord(id: string): Promise<SandboxRecord | undefined> {
    this.records.delete(id);
    return this.record(id);
  }

  async snapshot(id: string): Promise<SnapshotRecord | undefined> {
    const raw = await this.client.get(this.key(`snapshots/${id}`)).buffer();
    return raw ? parseRecord(snapshotRecordSchema, raw) : undefined;
  }

  /** Every snapshot record of `owner` (what `GET /snapshots` lists on any node). */
  async snapshotsOf(owner: string): Promise<SnapshotRecord[]> {
    const all = await this.client.getAll().prefix(this.key("snapshots/")).buffers();
    return Object.values(all)
      .map((v) => parseRecord(snapshotRecordSchema, v))
      .filter((r): r is SnapshotRecord => r !== undefined && r.owner === owner);
  }

  private async listRecords(): Promise<SandboxRecord[]> {
    const all = await this.client.getAll().prefix(this.key("sandboxes/")).buffers();
    return Object.values(all)
      .map((v) => parseRecord(sandboxRecordSchema, v))
      .filter((r): r is SandboxRecord => r !== undefined);
  }

  /**
   * Put `mine` (`value`, on this node's lease) under `dir` while fewer than `max` entries are
   * there (else `full()`): one transaction that holds only if nothing in `dir` was put after the
   * count was read (etcd ≥ 3.3 compares a range), so two nodes never both take the last place;
   * retried on a race, 503 after 20.
   */
  private async takePlace(dir: string, mine: string, value: string, max: number, what: string, full: () => HttpError): Promise<void> {
    if (this.regrant) throw new Error("this node lost its lease and is joining again");
    for (let attempt = 0; ; attempt++) {
      const range = await this.client.kv.range({ key: Buffer.from(dir), range_end: prefixEnd(dir), count_only: true });
      if (Number(range.count) >= max) throw full();
      const res = await this.client.kv.txn({
        compare: rangeUnchangedSince(dir, String(range.header.revision)),
        success: [{ request_put: { key: Buffer.from(mine), value: Buffer.from(value), lease: this.leaseId() } }],
        failure: [],
      });
      if (res.succeeded) return;
      if (attempt >= 20) throw new HttpError(503, "CLUSTER_UNAVAILABLE", `too many concurrent ${what} for this API key; retry`, {}, { "retry-after": "1" });
    }
  }

  /**
   * Take a place in `owner`'s quota of `max` sandboxes across the cluster (429 at it, 503 when
   * the store cannot be reached). The place is on this node's lease until commit().
   */
  async reserve(owner: string, max: number): Promise<Reservation> {
    const dir = this.key(`owners/${ownerHash(owner)}/`);
    const mine = `${dir}~${randomUUID()}`;
    try {
      await this.takePlace(dir, mine, "", max, "creates", () => new HttpError(429, "QUOTA_EXCEEDED", `this API key may hold ${max} live sandboxes across the cluster (quota maxSandboxes); delete one first`, { quota: "maxSandboxes", value: max }));
    } catch (e) {
      if (e instanceof HttpError) throw e;
      throw storeUnavailable("check the key's quota across the cluster", e);
    }
    let done = false;
    return {
      commit: async (r) => {
        done = true;
        try {
          // The reservation becomes the sandbox's own place, in the same transaction.
          await this.place(r, "running", false, [{ request_delete_range: { key: Buffer.from(mine) } }]);
        } catch (e) {
          throw storeUnavailable("record the new sandbox in the cluster catalog", e);
        }
      },
      release: async () => {
        if (done) return;
        done = true;
        await this.client.delete().key(mine).catch(() => undefined); // on the lease anyway
      },
    };
  }

  /** The sandbox runs here (again): counted on this node's lease. */
  running(r: Pick<SandboxRecord, "id" | "owner" | "tier" | "createdAt">): Promise<void> {
    return this.write(r.id, () => this.place(r, "running", false));
  }

  /** Paused here; `persisted`: on shared storage, so it outlives this node (its quota place too). */
  paused(r: Pick<SandboxRecord, "id" | "owner" | "tier" | "createdAt">, persisted: boolean): Promise<void> {
    return this.write(r.id, () => this.place(r, "paused", persisted));
  }

  /**
   * Record the sandbox as this node's, in `state`, and its place in its key's count: on this
   * node's lease, except a paused one saved to shared storage (it outlives the node). `before`:
   * operations of the same transaction, done first.
   */
  private async place(r: Pick<SandboxRecord, "id" | "owner" | "tier" | "createdAt">, state: SandboxRecord["state"], persisted: boolean, before: IRequestOp[] = []): Promise<void> {
    const record: SandboxRecord = { ...r, node: this.opts.nodeId, state, persisted };
    await this.client.kv.txn({
      compare: [],
      success: [
        ...before,
        { request_put: { key: Buffer.from(this.ownerKey(r.owner, r.id)), value: Buffer.from(""), lease: persisted ? "0" : this.leaseId() } },
        { request_put: { key: Buffer.from(this.key(`sandboxes/${r.id}`)), value: Buffer.from(JSON.stringify(record)) } },
      ],
      failure: [],
    });
    this.records.set(r.id, record);
  }

  /** Gone (deleted, expired, killed): out of the catalog and the key's count. */
  removed(r: Pick<SandboxRecord, "id" | "owner">): Promise<void> {
    this.records.delete(r.id);
    return this.write(r.id, async () => {
      await this.client.kv.txn({
        compare: [],
        success: [{ request_delete_range: { key: Buffer.from(this.ownerKey(r.owner, r.id)) } }, { request_delete_range: { key: Buffer.from(this.key(`sandboxes/${r.id}`)) } }],
        failure: [],
      });
    });
  }

  /**
   * Take over a sandbox whose node is gone (its paused state is on shared storage): succeeds for
   * exactly one node, by comparing the record as read. Returns whether this node got it.
   */
  async adopt(r: SandboxRecord): Promise<boolean> {
    const key = this.key(`sandboxes/${r.id}`);
    const res = await this.client.kv.range({ key: Buffer.from(key) });
    const kv = res.kvs[0];
    const now = kv ? parseRecord(sandboxRecordSchema, kv.value) : undefined;
    // Still the record the caller decided on (same node, still paused on shared storage).
    if (!kv || !now || now.node !== r.node || now.state !== "paused" || !now.persisted) {
      this.records.delete(r.id);
      return false;
    }
    const taken: SandboxRecord = { ...now, node: this.opts.nodeId };
    const txn = await this.client.kv.txn({
      compare: [{ key: Buffer.from(key), target: "Mod", result: "Equal", mod_revision: kv.mod_revision }],
      success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(JSON.stringify(taken)) } }],
      failure: [],
    });
    if (txn.succeeded) this.records.set(r.id, taken);
    else this.records.delete(r.id); // read it again next time
    return txn.succeeded;
  }

  /** A snapshot gone: out of the catalog and its key's snapshot quota. */
  removeSnapshot(id: string, owner: string): Promise<void> {
    return this.write(id, async () => {
      await this.client.kv.txn({
        compare: [],
        success: [{ request_delete_range: { key: Buffer.from(this.key(`snapshots/${id}`)) } }, { request_delete_range: { key: Buffer.from(this.snapshotOwnerKey(owner, id)) } }],
        failure: [],
      });
    });
  }

  /**
   * Take a place in `owner`'s snapshot quota across the cluster: `max` snapshots (429 at it),
   * and, at commit, `maxBytes` in all (429 over it). Both are decided in etcd transactions that
   * compare the key's whole range with the revision it was read at, so two nodes can never both
   * take the last place or the last bytes. A place not committed is released (or goes with the lease).
   */
  async reserveSnapshot(owner: string, max: number, maxBytes: number): Promise<SnapshotReservation> {
    const dir = this.key(`snapshot-owners/${ownerHash(owner)}/`);
    const mine = `${dir}~${randomUUID()}`;
    try {
      await this.takePlace(dir, mine, "0", max, "snapshots", () => new HttpError(429, "QUOTA_EXCEEDED", `this API key may keep ${max} snapshots across the cluster (quota maxSnapshots); delete one first`, { quota: "maxSnapshots", value: max }));
    } catch (e) {
      if (e instanceof HttpError) throw e;
      throw storeUnavailable("check the key's snapshot quota across the cluster", e);
    }
    let done = false;
    return {
      commit: async (r, bytes) => {
        try {
          for (let attempt = 0; ; attempt++) {
            const range = await this.client.kv.range({ key: Buffer.from(dir), range_end: prefixEnd(dir) });
            let used = 0;
            for (const kv of range.kvs) if (kv.key.toString() !== mine) used += Math.max(0, Number(kv.value.toString()) || 0);
            if (used + bytes > maxBytes) {
              const mb = maxBytes / 2 ** 20;
              throw new HttpError(429, "QUOTA_EXCEEDED", `this snapshot takes ${(bytes / 2 ** 20).toFixed(1)} MiB and this API key's snapshots already take ${(used / 2 ** 20).toFixed(1)} of its ${mb} MiB across the cluster (quota maxSnapshotMb); delete one first`, { quota: "maxSnapshotMb", value: mb });
            }
            const res = await this.client.kv.txn({
              compare: rangeUnchangedSince(dir, String(range.header.revision)),
              success: [
                { request_delete_range: { key: Buffer.from(mine) } },
                { request_put: { key: Buffer.from(this.snapshotOwnerKey(r.owner, r.id)), value: Buffer.from(String(bytes)), lease: r.persisted ? "0" : this.leaseId() } },
                { request_put: { key: Buffer.from(this.key(`snapshots/${r.id}`)), value: Buffer.from(JSON.stringify({ ...r, node: this.opts.nodeId })) } },
              ],
              failure: [],
            });
            if (res.succeeded) break;
            if (attempt >= 20) throw new HttpError(503, "CLUSTER_UNAVAILABLE", "too many concurrent snapshots for this API key; retry", {}, { "retry-after": "1" });
          }
          done = true;
        } catch (e) {
          if (e instanceof HttpError) throw e;
          throw storeUnavailable("record the snapshot in the cluster catalog", e);
        }
      },
      release: async () => {
        if (done) return;
        done = true;
        await this.client.delete().key(mine).catch(() => undefined); // on the lease anyway
      },
    };
  }

  /** Whether the store answers now (what `/healthz` reports). */
  async reachable(): Promise<boolean> {
    // At most ~1 s whatever the client's retries: a liveness probe must not time out on etcd.
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), 1000)));
    const asked = this.client
      .get(this.key("nodes/"))
      .options({ deadline: Date.now() + 1000 })
      .then(
        () => true,
        () => false,
      );
    try {
      return await Promise.race([asked, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Leave: the node's record and running sandboxes' places go with the lease; paused ones on shared storage stay. */
  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.chains.values()]);
    this.closed = true;
    for (const w of this.watchers) await w.cancel().catch(() => undefined);
    await this.lease?.revoke().catch(() => undefined);
    this.client.close();
  }

  /**
   * A catalog write, after the earlier ones for the same id: tried now (the caller waits), and
   * when the store is down kept and retried in the background until it answers (a delete must
   * not be lost, or the key's count stays high).
   */
  private write(id: string, op: () => Promise<void>): Promise<void> {
    const prev = this.chains.get(id) ?? Promise.resolve();
    const first = prev.then(op);
    const chain = first.catch(async (e: unknown) => {
      this.opts.log(`cluster: catalog write for ${id} failed (${(e as Error).message}); retrying in the background`);
      for (let delay = 500; !this.closed; delay = Math.min(delay * 2, 5000)) {
        await new Promise((r) => setTimeout(r, delay));
        try {
          await op();
          return;
        } catch {
          // still down
        }
      }
    });
    this.chains.set(id, chain);
    void chain.then(() => {
      if (this.chains.get(id) === chain) this.chains.delete(id);
    });
    return first.catch(() => undefined);
  }

  private async syncNodes(): Promise<void> {
    const all = await this.client.getAll().prefix(this.key("nodes/")).buffers();
    this.nodes.clear();
    for (const v of Object.values(all)) {
      const n = parseRecord(nodeInfoSchema, v);
      if (n) this.nodes.set(n.id, n);
    }
  }

  /** Call `fn` with each node's id as it leaves (its lease ended); returns the unsubscribe. */
  onNodeLeft(fn: (id: string) => void): () => void {
    this.leftListeners.add(fn);
    return () => this.leftListeners.delete(fn);
  }

  private onNode(kv: IKeyValue, alive: boolean): void {
    const id = kv.key.toString().slice(this.key("nodes/").length);
    if (!alive) {
      if (this.nodes.delete(id)) this.opts.log(`cluster: node ${id} left (its lease ended)`);
      for (const fn of [...this.leftListeners]) fn(id);
      return;
    }
    const n = parseRecord(nodeInfoSchema, kv.value);
    if (!n) return;
    if (!this.nodes.has(id)) this.opts.log(`cluster: node ${id} joined (${n.url})`);
    this.nodes.set(id, n);
  }

  private leaseId(): string {
    if (this.leaseIdValue === undefined) throw new Error("this node has no lease yet");
    return this.leaseIdValue;
  }

  private ownerKey(owner: string, id: string): string {
    return this.key(`owners/${ownerHash(owner)}/${id}`);
  }

  private snapshotOwnerKey(owner: string, id: string): string {
    return this.key(`snapshot-owners/${ownerHash(owner)}/${id}`);
  }

  private key(rest: string): string {
    return this.prefix + rest;
  }
}

function ownerHash(owner: string): string {
  return createHash("sha256").update(owner).digest("hex").slice(0, 32);
}

/** A transaction's compare: nothing in the range under `dir` was put after revision `rev`. */
function rangeUnchangedSince(dir: string, rev: string): never[] {
  return [{ key: Buffer.from(dir), range_end: prefixEnd(dir), target: "Mod", result: "Less", mod_revision: String(BigInt(rev) + 1n) } as never];
}

/** The first key after every key starting with `prefix` (etcd's range end for a prefix). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  b[b.length - 1]! += 1;
  return b;
}

function parseRecord<T>(schema: z.ZodType<T>, raw: Buffer): T | undefined {
  if (raw.length > MAX_VALUE_BYTES) return undefined;
  try {
    const r = schema.safeParse(JSON.parse(raw.toString("utf8")));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
