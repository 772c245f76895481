// agentbox/server: start the HTTP API on a Node HTTP server. `agentbox serve` is a thin wrapper
// around startServer(); tests and embedders call it directly (port 0 picks a free port).
import { SnapshotStore } from "./snapshots.js";
import { readFileSync, realpathSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { availableParallelism } from "node:os";
import http from "node:http";
import { getRequestListener, serve } from "@hono/node-server";
import type { Hono } from "hono";
import { Sandbox, type PoolOptions, type SandboxSnapshot } from "../index.js";
import { checkMount, createApp } from "./app.js";
import { KeyRing } from "./keys.js";
import { ServerMetrics } from "./metrics.js";
import { ExposedPorts, upgradeHandler } from "./ports.js";
import { SandboxRegistry } from "./registry.js";
import { StateDir } from "./state.js";
import { E2bSessions, TEMPLATES } from "./e2b/index.js";
import { ClusterNode, ClusterRouter, type ClusterOptions, type LocalHoldings } from "./cluster/index.js";
import { gvisorUnavailableReason } from "../engines/heavy-gvisor/box.js";
import { parseAllowEntry } from "../policy/network.js";
import { SERVER_DEFAULTS } from "./defaults.js";

export { KeyRing, loadKeys, type Principal, type Quota } from "./keys.js";
export { parseEndpoints, type ClusterOptions } from "./cluster/index.js";
export { CLUSTER_DEFAULTS, SERVER_DEFAULTS } from "./defaults.js";
export { openApiDocument } from "./routes.js";

export interface ServerOptions {
  host?: string;
  /** 0 picks a free port (see `RunningServer.port`). */
  port?: number;
  /** No keys: allowed on loopback only; every request is one anonymous principal. */
  keys?: KeyRing;
  /** Live sandboxes across all keys and tiers (default 16: ~200 MB of worker each). */
  maxSandboxes?: number;
  /** Live heavy-tier sandboxes across all keys (default 8); each also counts in maxSandboxes. */
  maxHeavySandboxes?: number;
  /** Creates that may wait for a free slot (default 256) and for how long (default 30 s). */
  maxQueue?: number;
  queueTimeoutMs?: number;
  /** Sandboxes starting at once (default: the number of CPUs); the rest wait their turn. */
  maxConcurrentStarts?: number;
  /** A fixed pool: ready workers kept per nano language (0 turns pooling off). Given, the pool is
   *  fixed and poolMin/poolMax must not be; absent, the pools are adaptive (below). */
  poolSize?: number;
  /** Adaptive pools (the default): each nano language keeps poolMin (default 2) ready workers and
   *  grows under demand up to poolMax (default 8), all pools within poolMemoryBudgetMb (default
   *  1024), back to poolMin after poolIdleShrinkMs (default 30 s) without takes. */
  poolMin?: number;
  poolMax?: number;
  poolMemoryBudgetMb?: number;
  poolIdleShrinkMs?: number;
  maxJsonBytes?: number;
  maxUploadBytes?: number;
  /** Host directories under which clients may ask for read-only mounts (default none). */
  mountRoots?: string[];
  /** `network.allow` entries clients may request for their sandboxes (default none: no network). */
  netAllow?: string[];
  /** How long a snapshot, or a paused sandbox, is kept before the server deletes it (default 24 h). */
  snapshotTtlMs?: number;
  /**
   * A directory where snapshots and paused sandboxes are written (atomically, checksummed) so they
   * outlive the process: loaded back at start (server/state.ts). Absent: memory only.
   */
  stateDir?: string;
  /** What close() does with running sandboxes: "pause" (write them to the state dir; the default with stateDir) or "kill" (the default without). */
  onShutdown?: "pause" | "kill";
  /**
   * Join a cluster coordinated by etcd (cluster/): any node answers for any sandbox, creates are
   * placed by room, keys' quotas hold across nodes. With stateDir, that directory is shared by
   * every node (paused sandboxes and snapshots of a node that is gone resume on another).
   */
  cluster?: ClusterOptions;
  log?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  port: number;
  /** What close() does with running sandboxes. */
  onShutdown: "pause" | "kill";
  /** Kill every sandbox the server owns, stop the pool, close the socket. Idempotent. */
  close(): Promise<void>;
}


/** configurePool()'s options from the server's: fixed when poolSize is given, else adaptive. */
export function poolOptions(opts: Pick<ServerOptions, "poolSize" | "poolMin" | "poolMax" | "poolMemoryBudgetMb" | "poolIdleShrinkMs">): PoolOptions {
  if (opts.poolSize !== undefined) {
    if (opts.poolMin !== undefined || opts.poolMax !== undefined) throw new Error("--pool (a fixed pool) and --pool-min/--pool-max (an adaptive one): give one");
    // A fixed pool is the size asked for: a budget only when one is given.
    return { size: opts.poolSize, ...(opts.poolMemoryBudgetMb !== undefined ? { memoryBudgetMb: opts.poolMemoryBudgetMb } : {}) };
  }
  const max = opts.poolMax ?? Math.max(SERVER_DEFAULTS.poolMax, opts.poolMin ?? 0);
  return {
    min: opts.poolMin ?? Math.min(SERVER_DEFAULTS.poolMin, max),
    max,
    memoryBudgetMb: opts.poolMemoryBudgetMb ?? SERVER_DEFAULTS.poolMemoryBudgetMb,
    idleShrinkMs: opts.poolIdleShrinkMs ?? SERVER_DEFAULTS.poolIdleShrinkMs,
  };
}

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

const VERSION = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** The HTTP API without a socket: `app.fetch` (or `app.request()` in tests) serves it in-process. */
export interface AgentboxServer {
  app: { fetch: (req: Request) => Response | Promise<Response>; request: Hono["request"] };
  /** End every sandbox the server owns (kill, or pause into the state directory: `onShutdown`) and stop the pool. Idempotent. */
  close(): Promise<void>;
  /** What close() does with running sandboxes. */
  onShutdown: "pause" | "kill";
  /** For a Node HTTP server's 'upgrade' event: WebSockets to the sandboxes' proxied ports. */
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Cluster mode: this node's membership and what its router needs of this server. */
  cluster?: { node: ClusterNode; holdings: LocalHoldings };
}

/** The app, its registry and the worker pool, ready to serve requests in-process. */
export async function createServer(opts: Omit<ServerOptions, "host" | "port"> = {}): Promise<AgentboxServer> {
  const keys = opts.keys ?? KeyRing.none();
  const log = opts.log ?? ((line: string) => process.stderr.write(`agentbox serve: ${line}\n`));
  const ref: { registry?: SandboxRegistry } = {};
  const maxSandboxes = opts.maxSandboxes ?? SERVER_DEFAULTS.maxSandboxes;
  const maxHeavySandboxes = opts.maxHeavySandboxes ?? SERVER_DEFAULTS.maxHeavySandboxes;
  const cluster = opts.cluster
    ? new ClusterNode(opts.cluster, () => ref.registry as SandboxRegistry, { maxSandboxes, maxHeavy: maxHeavySandboxes, heavy: gvisorUnavailableReason() === undefined, version: VERSION }, log)
    : undefined;
  // A cluster's nodes share the directory: each writes through its own temporary names.
  const state = opts.stateDir !== undefined ? StateDir.open(opts.stateDir, log, cluster?.nodeId) : undefined;
  const onShutdown = opts.onShutdown ?? (state ? "pause" : "kill");
  if (onShutdown === "pause" && !state) throw new Error("--on-shutdown pause needs --state-dir (where the paused sandboxes are written)");
  const metrics = new ServerMetrics(() => ref.registry?.size ?? 0, () => ref.registry?.queued ?? 0, () => ref.registry?.heavy ?? 0);
  const registry = (ref.registry = new SandboxRegistry(
    {
      maxSandboxes,
      maxHeavySandboxes,
      maxQueue: opts.maxQueue ?? SERVER_DEFAULTS.maxQueue,
      queueTimeoutMs: opts.queueTimeoutMs ?? SERVER_DEFAULTS.queueTimeoutMs,
      maxConcurrentStarts: opts.maxConcurrentStarts ?? availableParallelism(),
      pausedTtlMs: opts.snapshotTtlMs ?? SERVER_DEFAULTS.snapshotTtlMs,
      state,
      cluster: cluster?.registryHooks(),
      log,
    },
    metrics,
  ));
  const ports = new ExposedPorts();
  const snapshots = new SnapshotStore(opts.snapshotTtlMs ?? SERVER_DEFAULTS.snapshotTtlMs, state, log);
  const mountRoots = (opts.mountRoots ?? []).map((r) => realpathSync(r));
  // What the directory names is held to this start's rules: its mounts under today's --mount-root.
  const admit = (s: SandboxSnapshot) => s.options.mounts.forEach((m, i) => checkMount(m, i, mountRoots));
  if (cluster) {
    // The shared directory holds every node's entries: each is taken on demand, as the catalog gives it to this node.
    snapshots.hooks = cluster.snapshotHooks();
  } else if (state) {
    await snapshots.load(admit);
    await registry.load(admit);
    log(`state: ${state.root}: loaded ${snapshots.size} snapshots and ${registry.size} paused sandboxes`);
  }
  const e2bSessions = new E2bSessions(registry, log);
  const app = createApp({
    ...(cluster ? { clusterHealth: () => cluster.health(), nodeId: cluster.nodeId } : {}),
    e2bSessions,
    ports,
    snapshots,
    keys,
    registry,
    metrics,
    version: VERSION,
    maxJsonBytes: opts.maxJsonBytes ?? SERVER_DEFAULTS.maxJsonBytes,
    maxUploadBytes: opts.maxUploadBytes ?? SERVER_DEFAULTS.maxUploadBytes,
    mountRoots,
    netAllow: (opts.netAllow ?? []).map((e) => {
      const r = parseAllowEntry(e);
      if (typeof r === "string") throw new Error(`--allow-net: ${r}`);
      return e;
    }),
    log,
  });
  await Sandbox.configurePool(poolOptions(opts));
  let closing: Promise<void> | undefined;
  return {
    app,
    onShutdown,
    upgrade: upgradeHandler({ keys, registry, ports }),
    ...(cluster
      ? {
          cluster: {
            node: cluster,
            holdings: {
              hasSandbox: (id: string) => registry.holds(id),
              forgetSandbox: (id: string) => registry.forget(id),
              localLoad: () => cluster.load(),
              hasSnapshot: (id: string) => snapshots.has(id),
              adoptSandbox: async (id: string) => (await registry.adoptPaused(id, admit)) !== undefined,
              adoptSnapshot: async (id: string) => (await snapshots.adopt(id, admit)) !== undefined,
            },
          },
        }
      : {}),
    close: () =>
      (closing ??= (async () => {
        e2bSessions.closeAll();
        await registry.closeAll(onShutdown); // running requests end with their sandbox's error (or wait for its pause)
        await snapshots.closeAll();
        await cluster?.close(); // after the pauses: they are recorded before the lease goes
        await Sandbox.shutdownPool();
      })()),
  };
}

/** createServer() on a Node HTTP server. */
export async function startServer(opts: ServerOptions = {}): Promise<RunningServer> {
  const host = opts.host ?? SERVER_DEFAULTS.host;
  if ((opts.keys ?? KeyRing.none()).open && !isLoopback(host)) {
    throw new Error(`refusing to listen on ${host} without API keys: give --keys FILE or AGENTBOX_API_KEYS, or listen on 127.0.0.1`);
  }
  const log = opts.log ?? ((line: string) => process.stderr.write(`agentbox serve: ${line}\n`));
  const inner = await createServer({ ...opts, log });
  const c = inner.cluster;
  const router = c
    ? new ClusterRouter({
        store: c.node.store,
        keys: opts.keys ?? KeyRing.none(),
        local: getRequestListener(inner.app.fetch),
        localFetch: async (r) => inner.app.fetch(r),
        ...c.holdings,
        needsHeavy: createNeedsHeavy,
        e2bSnapshotTemplate: (body) => {
          const t = (body as { templateID?: unknown } | undefined)?.templateID;
          return typeof t === "string" && /^snap_[0-9a-f]{24}$/.test(t) ? t : undefined;
        },
        maxJsonBytes: opts.maxJsonBytes ?? SERVER_DEFAULTS.maxJsonBytes,
        maxUploadBytes: opts.maxUploadBytes ?? SERVER_DEFAULTS.maxUploadBytes,
        log,
      })
    : undefined;
  const server = await new Promise<http.Server>((resolve, reject) => {
    if (router) {
      const s = http.createServer((req, res) => router.handle(req, res));
      s.once("error", reject);
      s.listen(opts.port ?? SERVER_DEFAULTS.port, host, () => resolve(s));
      return;
    }
    const s = serve({ fetch: inner.app.fetch, hostname: host, port: opts.port ?? SERVER_DEFAULTS.port }, () => resolve(s as http.Server));
    s.once("error", reject);
  });
  server.on("error", (e) => log(`server error: ${e.message}`));
  server.on("upgrade", router ? (req: IncomingMessage, socket: Duplex, head: Buffer) => void router.upgrade(req, socket, head, inner.upgrade) : inner.upgrade);
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  if (c) {
    try {
      await c.node.join(url);
    } catch (e) {
      server.close();
      await inner.close();
      throw new Error(`--cluster: could not join through etcd (${c.node.options.endpoints.join(", ")}): ${(e as Error).message}`);
    }
    log(`cluster: node ${c.node.nodeId} joined as ${c.node.options.advertiseUrl ?? url}`);
  }
  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    onShutdown: inner.onShutdown,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        await inner.close();
        router?.close();
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        await closed;
      })()),
  };
}

/** Whether a create (native body, or E2B's with its template) needs a node with the heavy tier. */
function createNeedsHeavy(api: "native" | "e2b", body: unknown): boolean {
  const o = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  const tier = api === "native" ? o.tier : TEMPLATES[typeof o.templateID === "string" ? o.templateID : ""]?.tier;
  return tier === "heavy" || tier === "auto";
}
