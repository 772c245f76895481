// agentbox/server: start the HTTP API on a Node HTTP server. `agentbox serve` is a thin wrapper
// around startServer(); tests and embedders call it directly (port 0 picks a free port).
import { SnapshotStore } from "./snapshots.js";
import { readFileSync, realpathSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { availableParallelism } from "node:os";
import { serve } from "@hono/node-server";
import type { Hono } from "hono";
import { Sandbox, type PoolOptions, type SandboxSnapshot } from "../index.js";
import { checkMount, createApp } from "./app.js";
import { KeyRing } from "./keys.js";
import { ServerMetrics } from "./metrics.js";
import { ExposedPorts, upgradeHandler } from "./ports.js";
import { SandboxRegistry } from "./registry.js";
import { StateDir } from "./state.js";
import { E2bSessions } from "./e2b/index.js";
import { parseAllowEntry } from "../policy/network.js";

export { KeyRing, loadKeys, type Principal, type Quota } from "./keys.js";
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

/** Defaults of startServer() (and so of `agentbox serve`, whose help shows them). */
export const SERVER_DEFAULTS = {
  host: "127.0.0.1",
  port: 8787,
  maxSandboxes: 16,
  maxHeavySandboxes: 8,
  maxQueue: 256,
  queueTimeoutMs: 30_000,
  poolMin: 2,
  poolMax: 8,
  poolMemoryBudgetMb: 1024,
  poolIdleShrinkMs: 30_000,
  maxJsonBytes: 4 * 1024 * 1024,
  maxUploadBytes: 64 * 1024 * 1024,
  snapshotTtlMs: 24 * 3600_000,
} as const;

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
}

/** The app, its registry and the worker pool, ready to serve requests in-process. */
export async function createServer(opts: Omit<ServerOptions, "host" | "port"> = {}): Promise<AgentboxServer> {
  const keys = opts.keys ?? KeyRing.none();
  const log = opts.log ?? ((line: string) => process.stderr.write(`agentbox serve: ${line}\n`));
  const ref: { registry?: SandboxRegistry } = {};
  const state = opts.stateDir !== undefined ? StateDir.open(opts.stateDir, log) : undefined;
  const onShutdown = opts.onShutdown ?? (state ? "pause" : "kill");
  if (onShutdown === "pause" && !state) throw new Error("--on-shutdown pause needs --state-dir (where the paused sandboxes are written)");
  const metrics = new ServerMetrics(() => ref.registry?.size ?? 0, () => ref.registry?.queued ?? 0, () => ref.registry?.heavy ?? 0);
  const registry = (ref.registry = new SandboxRegistry(
    {
      maxSandboxes: opts.maxSandboxes ?? SERVER_DEFAULTS.maxSandboxes,
      maxHeavySandboxes: opts.maxHeavySandboxes ?? SERVER_DEFAULTS.maxHeavySandboxes,
      maxQueue: opts.maxQueue ?? SERVER_DEFAULTS.maxQueue,
      queueTimeoutMs: opts.queueTimeoutMs ?? SERVER_DEFAULTS.queueTimeoutMs,
      maxConcurrentStarts: opts.maxConcurrentStarts ?? availableParallelism(),
      pausedTtlMs: opts.snapshotTtlMs ?? SERVER_DEFAULTS.snapshotTtlMs,
      state,
      log,
    },
    metrics,
  ));
  const ports = new ExposedPorts();
  const snapshots = new SnapshotStore(opts.snapshotTtlMs ?? SERVER_DEFAULTS.snapshotTtlMs, state, log);
  const mountRoots = (opts.mountRoots ?? []).map((r) => realpathSync(r));
  if (state) {
    // What the directory names is held to this start's rules: its mounts under today's --mount-root.
    const admit = (s: SandboxSnapshot) => s.options.mounts.forEach((m, i) => checkMount(m, i, mountRoots));
    await snapshots.load(admit);
    await registry.load(admit);
    log(`state: ${state.root}: loaded ${snapshots.size} snapshots and ${registry.size} paused sandboxes`);
  }
  const e2bSessions = new E2bSessions(registry, log);
  const app = createApp({
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
    close: () =>
      (closing ??= (async () => {
        e2bSessions.closeAll();
        await registry.closeAll(onShutdown); // running requests end with their sandbox's error (or wait for its pause)
        await snapshots.closeAll();
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
  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: inner.app.fetch, hostname: host, port: opts.port ?? SERVER_DEFAULTS.port }, () => resolve(s));
    s.once("error", reject);
  });
  server.on("error", (e) => log(`server error: ${e.message}`));
  server.on("upgrade", inner.upgrade);
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    onShutdown: inner.onShutdown,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        await inner.close();
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        await closed;
      })()),
  };
}
