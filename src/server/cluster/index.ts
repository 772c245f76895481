// Cluster mode (`agentbox serve --cluster etcd://HOST:2379[,…]`): this node joins the others
// through etcd (store.ts), tells it of every sandbox and snapshot it holds (the registry's and
// snapshot store's hooks), publishes its room every second, and routes each request to the node
// that can serve it (router.ts). No consensus of our own: etcd's leases say who is alive, its
// transactions keep the keys' quotas.
import { hostname } from "node:os";
import type { Principal } from "../keys.js";
import type { ClusterHooks, Entry, SandboxRegistry } from "../registry.js";
import { snapshotInfo, type SnapshotHooks } from "../snapshots.js";
import { ClusterStore, type NodeInfo } from "./store.js";
import { GoneSweeper } from "./sweep.js";
import { CLUSTER_DEFAULTS } from "../defaults.js";

export { ClusterRouter, classify, type LocalHoldings } from "./router.js";
export { ClusterStore } from "./store.js";
export { GoneSweeper } from "./sweep.js";

export interface ClusterOptions {
  /** etcd endpoints as given: `etcd://host:2379,host2:2379` or `http://host:2379` (one or a list). */
  endpoints: string[];
  /** This node's name in the cluster (default: the host name). */
  nodeId?: string;
  /** Where other nodes reach this node (default: the URL it listens on). */
  advertiseUrl?: string;
  /** How long a node's lease lives without a keep-alive (default 10 s): how soon a dead node's sandboxes answer 410. */
  leaseTtlMs?: number;
  /** etcd key prefix (default /agentbox/): clusters sharing one etcd keep apart by it. */
  prefix?: string;
  /** How long a gone node's running sandboxes answer 410 before their records are removed (then 404); default 1 h. */
  goneRetentionMs?: number;
}

export { CLUSTER_DEFAULTS };

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** `etcd://a:2379,b:2379` (or http(s)://, or bare host:port) as the client's endpoint URLs. */
export function parseEndpoints(spec: string): string[] {
  const out: string[] = [];
  for (const part of spec.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(?:(etcd|http|https):\/\/)?([^/\s]+?)\/?$/.exec(part);
    if (!m) throw new Error(`--cluster: ${JSON.stringify(part)} is not an etcd endpoint (etcd://HOST:PORT)`);
    const scheme = m[1] === "https" ? "https" : "http";
    const hostPort = m[2]!;
    const url = new URL(`${scheme}://${hostPort}`);
    out.push(`${scheme}://${url.host}${url.port ? "" : ":2379"}`);
  }
  if (out.length === 0) throw new Error("--cluster: give at least one etcd endpoint (etcd://HOST:2379)");
  return out;
}

export function checkNodeId(id: string): string {
  if (!NODE_ID.test(id)) throw new Error(`--node-id: ${JSON.stringify(id)} must be 1-63 of [A-Za-z0-9_.-], starting with a letter or digit`);
  return id;
}

/** This node's membership: its store connection and what it publishes. */
export class ClusterNode {
  readonly store: ClusterStore;
  readonly nodeId: string;
  private timer: NodeJS.Timeout | undefined;
  private last = "";
  private readonly startedAt = Date.now();
  private readonly sweeper: GoneSweeper;

  constructor(
    readonly options: ClusterOptions,
    private readonly registry: () => SandboxRegistry,
    private readonly capacity: { maxSandboxes: number; maxHeavy: number; heavy: boolean; version: string },
    log: (line: string) => void,
  ) {
    this.nodeId = checkNodeId(options.nodeId ?? hostname().split(".")[0] ?? "node");
    this.store = new ClusterStore({
      endpoints: options.endpoints,
      nodeId: this.nodeId,
      prefix: options.prefix ?? CLUSTER_DEFAULTS.prefix,
      leaseTtlS: Math.max(2, Math.round((options.leaseTtlMs ?? CLUSTER_DEFAULTS.leaseTtlMs) / 1000)),
      log,
    });
    this.sweeper = new GoneSweeper(this.store, { retentionMs: options.goneRetentionMs ?? CLUSTER_DEFAULTS.goneRetentionMs, log });
  }

  /** What the registry tells the catalog. */
  registryHooks(): ClusterHooks {
    const store = this.store;
    const rec = (e: Entry) => ({ id: e.id, owner: e.owner, tier: e.sandbox.options.tier, createdAt: e.createdAt });
    return {
      reserve: async (who: Principal) => {
        const r = await store.reserve(who.name, who.quota.maxSandboxes);
        return { commit: (e: Entry) => r.commit(rec(e)), release: () => r.release() };
      },
      running: (e) => store.running(rec(e)),
      paused: (e) => store.paused(rec(e), e.persisted === true),
      removed: (e) => store.removed(e),
    };
  }

  snapshotHooks(): SnapshotHooks {
    return {
      reserve: async (who) => {
        const r = await this.store.reserveSnapshot(who.name, who.quota.maxSnapshots, who.quota.maxSnapshotMb * 1024 * 1024);
        return {
          commit: (e, persisted) => r.commit({ id: e.id, owner: e.owner, info: snapshotInfo(e), persisted }, e.bytes ?? e.snapshot.sizeBytes()),
          release: () => r.release(),
        };
      },
      removed: (id, owner) => this.store.removeSnapshot(id, owner),
    };
  }

  /** Join with `url` as this node's address; then publish its room every second (when it changed). */
  async join(url: string): Promise<void> {
    await this.store.join(this.info(url));
    this.sweeper.start();
    this.timer = setInterval(() => {
      const info = this.info(url);
      const text = JSON.stringify({ ...info, startedAt: 0 });
      if (text === this.last) return;
      this.store.publish(info).then(
        () => (this.last = text),
        () => undefined, // the store is down: published again when it answers
      );
    }, 1000);
    this.timer.unref();
  }

  /** This node's live counts: running sandboxes, heavy ones among them, creates waiting for a slot. */
  load(): { sandboxes: number; heavy: number; queued: number } {
    const r = this.registry();
    return { sandboxes: r.running, heavy: r.heavy, queued: r.queued };
  }

  private info(url: string): NodeInfo {
    return {
      id: this.nodeId,
      url: this.options.advertiseUrl ?? url,
      tiers: this.capacity.heavy && this.capacity.maxHeavy > 0 ? ["nano", "heavy"] : ["nano"],
      maxSandboxes: this.capacity.maxSandboxes,
      maxHeavy: this.capacity.heavy ? this.capacity.maxHeavy : 0,
      ...this.load(),
      startedAt: this.startedAt,
      version: this.capacity.version,
    };
  }

  /** What `/healthz` adds: this node, the live nodes, and whether the store answers. */
  async health(): Promise<{ node: string; store: "ok" | "unreachable"; nodes: string[] }> {
    return { node: this.nodeId, store: (await this.store.reachable()) ? "ok" : "unreachable", nodes: this.store.liveNodes().map((n) => n.id).sort() };
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.sweeper.stop();
    await this.store.close();
  }
}
