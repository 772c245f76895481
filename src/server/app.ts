// The HTTP API as a Hono app over web-standard Request/Response: a handler per operation of the
// route table (routes.ts), auth, body limits and the error table. It parses input, calls the
// Sandbox API through the registry, and shapes output; no sandbox logic lives here.
import { realpathSync } from "node:fs";
import path from "node:path";
import { Hono, type Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { z } from "zod";
import { InvalidOptionsError, LimitError, resolveSandboxOptions, TierUnavailableError, type CommandHandle, type CommandOptions, type DisplayResult, type RunResult, type Sandbox } from "../index.js";
import { normalizeGuestPath, parseOptions } from "../policy/options.js";
import { readCappedBody, readJsonRequest } from "./body.js";
import { HttpError, invalid, notFound, toHttp } from "./http-errors.js";
import { bearerToken, type KeyRing, type Principal } from "./keys.js";
import type { ServerMetrics } from "./metrics.js";
import type { Entry, SandboxRegistry } from "./registry.js";
import { ExposedPorts, parsePort, proxyRequest } from "./ports.js";
import { SnapshotStore, snapshotInfo, type SnapshotEntry } from "./snapshots.js";
import { hasSandboxId, honoPath, openApiDocument, ROUTES, type OperationId, type RouteSpec } from "./routes.js";
import { createSandboxExtras, type CommandRequest, type CommandResultBody, type commandStatus } from "./schemas.js";
import { parseAllowList, withinRule } from "../policy/network.js";
import { createE2bApp, E2bSessions } from "./e2b/index.js";

/** Where a streamed operation's chunks go. */
interface Sink {
  signal: AbortSignal;
  onStdout: (chunk: string) => void;
  onStderr: (chunk: string) => void;
  /** A run's rich results, each as it happens (commands have none). */
  onResult: (result: DisplayResult) => void;
}

export interface AppOptions {
  keys: KeyRing;
  registry: SandboxRegistry;
  metrics: ServerMetrics;
  version: string;
  /** Largest JSON request body (code included). */
  maxJsonBytes: number;
  /** Largest file upload. */
  maxUploadBytes: number;
  /** Host directories (real paths) under which clients may ask for read-only mounts. */
  mountRoots: string[];
  /** `network.allow` entries clients may ask for (operator's --allow-net); empty = no network. */
  netAllow: string[];
  log: (line: string) => void;
  /** The sandboxes' proxied ports (shared with the server's WebSocket upgrade handler); default: the app's own. */
  ports?: ExposedPorts;
  /** The keys' snapshots; default: the app's own (24 h TTL). */
  snapshots?: SnapshotStore;
  /** The E2B-compatible surface's sessions (served under /e2b); default: the app's own. */
  e2bSessions?: E2bSessions;
  /** Cluster mode: this node's id, shown in sandbox info as `node`. */
  nodeId?: string;
  /** Cluster mode: what `/healthz` adds (this node, the live nodes, whether etcd answers). */
  clusterHealth?: () => Promise<Record<string, unknown>>;
}

/** Operations on a paused sandbox that leave it paused: they read what the server keeps, or end it. */
const KEEP_PAUSED = new Set<OperationId>(["getSandbox", "deleteSandbox", "pauseSandbox", "getNetworkLog", "listCommands", "getCommand", "listPorts", "closePort"]);

/** What the reverse proxy answers (CONNECT and TRACE are not proxied). */
const PROXY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

type Env = { Variables: { who: Principal } };

/** Ended background commands remembered per sandbox (for GET .../commands/{pid}), beside the running ones. */
const KEPT_ENDED_COMMANDS = 64;

/** A background command the server started, and how it ended once it has. */
interface Tracked {
  handle: CommandHandle;
  ended?: { result: CommandResultBody } | { error: Error };
}

/** What a route's handler gets, read and parsed as its table entry says. */
type Input<R extends RouteSpec> = {
  /** The caller's sandbox, for a path with `{id}`. */
  entry: R["path"] extends `${string}{id}${string}` ? Entry : undefined;
  /** `?path=`, normalized. */
  guestPath: R extends { query: "path" } ? string : undefined;
  body: R extends { body: { kind: "json"; schema: infer S extends z.ZodType } } ? z.output<S> : R extends { body: { kind: "bytes" } } ? Uint8Array : undefined;
  /** The JSON body before parsing (to tell a field the client gave from a default). */
  raw: unknown;
};
type Handlers = { [K in OperationId]: (c: Context<Env>, input: Input<(typeof ROUTES)[K]>) => Response | Promise<Response> };

export function createApp(o: AppOptions): Hono<Env> {
  const app = new Hono<Env>();
  const { registry, metrics } = o;
  const show = (e: Entry) => info(e, o.nodeId);
  const exposed = o.ports ?? new ExposedPorts();
  const snapshots = o.snapshots ?? new SnapshotStore(24 * 3600_000);
  /** The caller's snapshot named in the path, or 404 (another key's too). */
  const snapshotOf = (c: Context<Env>): SnapshotEntry => {
    const id = c.req.param("snapshotId") ?? "";
    const s = snapshots.get(c.get("who").name, id);
    if (!s) {
      // One the state directory held but refused at start: say why it cannot be restored.
      const refused = snapshots.refusedReason(id);
      throw notFound(refused ? `snapshot ${id} was not loaded from the state directory and cannot be restored: ${refused}` : "no such snapshot for this API key");
    }
    return s;
  };
  const openapi = JSON.stringify(openApiDocument(o.version));

  app.use(async (c, next) => {
    await next();
    metrics.httpRequests.inc({ status: String(c.res.status) });
  });

  app.onError((e, c) => {
    const { status, body, headers } = toHttp(e);
    // 501 (tier unavailable) is the caller's choice meeting this build, 502 the guest app's port: not server faults.
    if (status >= 500 && status !== 501 && status !== 502 && !(e instanceof HttpError)) o.log(`error: ${c.req.method} ${c.req.path}: ${(e as Error)?.stack ?? String(e)}`);
    return c.json(body, status as 400, headers);
  });
  app.notFound((c) => c.json(toHttp(notFound(`no route ${c.req.method} ${c.req.path}`)).body, 404));

  /** Background commands started through this server, per sandbox, by guest pid (running, and the last ended ones). */
  const background = new WeakMap<Sandbox, Map<number, Tracked>>();

  const handlers: Handlers = {
    getHealth: async (c) => c.json({ status: "ok", sandboxes: registry.size, heavySandboxes: registry.heavy, queued: registry.queued, ...(o.clusterHealth ? { cluster: await o.clusterHealth() } : {}) }),
    getOpenApi: (c) => c.body(openapi, 200, { "content-type": "application/json" }),
    getMetrics: async (c) => c.body(await metrics.registry.metrics(), 200, { "content-type": metrics.registry.contentType }),

    // The body is the library's sandbox options (checked by its resolver, once) plus idleTimeoutMs.
    createSandbox: async (c, { raw: body }) => c.json(show(await createChecked(o, c.get("who"), body)), 201),
    listSandboxes: (c) => c.json({ sandboxes: registry.list(c.get("who").name).map(show) }),
    getSandbox: (c, { entry }) => c.json(show(entry)),
    pauseSandbox: async (c, { entry }) => {
      await registry.pause(entry);
      return c.json(show(entry));
    },
    resumeSandbox: async (c, { entry }) => {
      await registry.resume(entry);
      return c.json(show(entry));
    },
    createSnapshot: async (c, { entry }) => {
      const s = await snapshots.add(c.get("who"), entry.id, () => registry.use(entry, (sb) => sb.snapshot()));
      return c.json(snapshotInfo(s), 201);
    },
    listSnapshots: (c) => c.json({ snapshots: snapshots.list(c.get("who").name).map(snapshotInfo) }),
    deleteSnapshot: async (c) => {
      await snapshots.remove(snapshotOf(c).id);
      return c.body(null, 204);
    },
    restoreSnapshot: async (c, { body }) => {
      const s = snapshotOf(c);
      return c.json(show(await registry.restore(c.get("who"), s.snapshot, body.idleTimeoutMs)), 201);
    },
    forkSandbox: async (c, { entry, body }) => {
      const who = c.get("who");
      // A snapshot taken for the fork alone: not the key's to keep, removed once the forks run.
      const snap = await registry.use(entry, (sb) => sb.snapshot());
      const forks: Entry[] = [];
      try {
        for (let i = 0; i < body.count; i++) forks.push(await registry.restore(who, snap, body.idleTimeoutMs));
      } catch (e) {
        await Promise.allSettled(forks.map((f) => registry.remove(f)));
        throw e;
      } finally {
        await snap.remove();
      }
      return c.json({ sandboxes: forks.map(show) }, 201);
    },
    deleteSandbox: async (c, { entry }) => {
      await registry.remove(entry);
      return c.body(null, 204);
    },
    keepAlive: (c, { entry, body }) => {
      registry.touch(entry, body.idleTimeoutMs);
      return c.json(show(entry));
    },

    // A client that hangs up (or times out) interrupts its run instead of leaving it to its time limit.
    runCode: async (c, { entry, body }) => {
      checkRunQuota(c, body.timeoutMs);
      return c.json(await registry.use(entry, (sb) => observedRun(sb, body.code, { timeoutMs: body.timeoutMs, signal: c.req.raw.signal })));
    },
    runCodeStream: (c, { entry, body }) => {
      checkRunQuota(c, body.timeoutMs);
      return sse(c, (sink) => registry.use(entry, (sb) => observedRun(sb, body.code, { timeoutMs: body.timeoutMs, ...sink })));
    },
    // As for /run: a client that hangs up kills its command (not a background one: it is meant to outlive the request).
    runCommand: async (c, { entry, body }) => {
      checkRunQuota(c, body.timeoutMs);
      if (body.background) return c.json(commandInfo(await registry.use(entry, (sb) => startBackground(sb, body))), 202);
      const hangUp: Sink = { signal: c.req.raw.signal, onStdout: () => undefined, onStderr: () => undefined, onResult: () => undefined };
      return c.json(await registry.use(entry, (sb) => observedCommand(sb, body, hangUp)));
    },
    runCommandStream: (c, { entry, body }) => {
      checkRunQuota(c, body.timeoutMs);
      if (body.background) throw invalid("background", "a background command is started by POST /sandboxes/{id}/commands and waited for by GET /sandboxes/{id}/commands/{pid}/wait");
      // Refused before the stream starts, with the status /commands answers (not 200 and an error event).
      if (entry.sandbox.info.tier === "nano") {
        throw new TierUnavailableError(`commands need a real Linux userland: create the sandbox with { tier: "heavy" } or { tier: "auto" } (this one is tier "nano")`);
      }
      return sse(c, (sink) => registry.use(entry, (sb) => observedCommand(sb, body, sink)));
    },

    // Read without queueing behind a run or touching the idle timer, as the network log.
    listCommands: (c, { entry }) => c.json({ commands: entry.sandbox.commands.list().map((i) => ({ ...i, startedAt: i.startedAt.toISOString() })) }),
    getCommand: (c, { entry }) => c.json(commandStatusOf(tracked(c, entry))),
    // Waiting counts as use of the sandbox (its idle timer does not run out under a waiting client).
    waitCommand: async (c, { entry }) => {
      const t = tracked(c, entry);
      try {
        return c.json(await registry.use(entry, () => t.handle.wait().then(commandBody)));
      } catch (e) {
        if (e instanceof LimitError || !entry.sandbox.closed) throw e;
        const result = (e as { result?: unknown }).result;
        throw new HttpError(410, "SANDBOX_CLOSED", `the sandbox ended before command ${t.handle.pid} did: ${(e as Error).message}`, result ? { result } : {});
      }
    },
    killCommand: async (c, { entry, body }) => c.json({ killed: await tracked(c, entry).handle.kill(body.signal) }),

    downloadFile: async (c, { entry, guestPath: p }) => {
      const bytes = await registry.use(entry, (sb) => sb.files.read(p, { format: "bytes" }));
      return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { "content-type": "application/octet-stream" });
    },
    uploadFile: async (c, { entry, guestPath: p, body }) => {
      await registry.use(entry, (sb) => sb.files.write(p, body));
      return c.body(null, 204);
    },
    removeFile: async (c, { entry, guestPath: p }) => {
      await registry.use(entry, (sb) => sb.files.remove(p));
      return c.body(null, 204);
    },
    listFiles: async (c, { entry, guestPath: p }) => c.json({ entries: await registry.use(entry, (sb) => sb.files.list(p)) }),
    fileExists: async (c, { entry, guestPath: p }) => c.json({ exists: await registry.use(entry, (sb) => sb.files.exists(p)) }),
    makeDir: async (c, { entry, guestPath: p }) => {
      await registry.use(entry, (sb) => sb.files.makeDir(p));
      return c.body(null, 204);
    },
    // Read without queueing behind a run (the record is readable while one is in progress) or touching the idle timer.
    getNetworkLog: (c, { entry }) => c.json({ entries: entry.sandbox.network.log() }),

    exposePort: (c, { entry, body }) => {
      const now = entry.sandbox.info;
      if (now.tier === "nano" || (now.tier === "auto" && now.current === "nano")) {
        throw new TierUnavailableError(
          now.tier === "nano"
            ? 'ports need a server in a real Linux userland: create the sandbox with { tier: "heavy" } (this one is tier "nano")'
            : 'ports of a tier "auto" sandbox need it to run on the heavy tier; it still runs on the nano tier (it moves on its first command, or a cell that needs the heavy tier)',
        );
      }
      exposed.expose(entry, body.port);
      registry.touch(entry);
      return c.json({ port: body.port, url: proxyUrl(c, entry, body.port) }, 201);
    },
    listPorts: (c, { entry }) => c.json({ ports: exposed.list(entry).map((port) => ({ port, url: proxyUrl(c, entry, port) })) }),
    closePort: (c, { entry }) => {
      exposed.close(entry, parsePort(c.req.param("port")));
      return c.body(null, 204);
    },
    proxyPort: (c, { entry }) => {
      const port = parsePort(c.req.param("port"));
      const url = new URL(c.req.url);
      // The rest of the path as the client sent it (still percent-encoded), and the query.
      const rest = (/^\/sandboxes\/[^/]+\/ports\/[^/]+(\/.*)?$/.exec(url.pathname)?.[1] ?? "/") + url.search;
      return proxyRequest(exposed, registry, entry, port, rest, c.req.raw);
    },
  };

  /**
   * One Hono route per table entry. Input is read in one order for every route: the sandbox
   * (404/410), then ?path=, then the body (413, 400), so a request to a missing sandbox is a 404
   * whatever its body.
   */
  const register = (id: OperationId, r: RouteSpec) =>
    // A proxy answers every method, and `{rest}` is any number of segments.
    app.on(r.proxy ? PROXY_METHODS : [r.method.toUpperCase()], r.proxy ? honoPath(r.path).replace("/:rest", "/*") : honoPath(r.path), async (c) => {
      const entry = hasSandboxId(r.path) ? await find(c, id) : undefined;
      const p = r.query === "path" ? guestPath(c) : undefined;
      let body: unknown;
      let raw: unknown;
      if (r.body?.kind === "json") body = parseOptions(r.body.schema, (raw = await readJson(c, o.maxJsonBytes, !r.body.required)));
      else if (r.body?.kind === "json-resolved") raw = await readJson(c, o.maxJsonBytes, !r.body.required);
      else if (r.body?.kind === "bytes") body = await readBody(c, o.maxUploadBytes);
      const handler = handlers[id] as (c: Context<Env>, input: { entry?: Entry; guestPath?: string; body: unknown; raw: unknown }) => Response | Promise<Response>;
      return handler(c, { entry, guestPath: p, body, raw });
    });
  const routes = Object.entries(ROUTES) as [OperationId, RouteSpec][];
  for (const [id, r] of routes) if (r.public) register(id, r);

  // E2B's SDKs: their own auth (X-API-KEY on the control plane, the sandbox's token inside it).
  const e2b = createE2bApp({ ...o, snapshots, sessions: o.e2bSessions ?? new E2bSessions(registry, o.log) });
  app.route("/e2b", e2b);
  // Their signed file URLs (sandbox.uploadUrl/downloadUrl) are `/files` at the root of the origin.
  app.on(["GET", "POST"], "/files", (c) => e2b.fetch(c.req.raw));

  // Everything below needs a key (unless the server runs without keys on loopback); unknown routes too.
  app.use(async (c, next) => {
    const h = c.req.header("authorization");
    const who = o.keys.authenticate(bearerToken(h));
    if (!who) {
      throw new HttpError(401, "UNAUTHORIZED", h === undefined ? "missing Authorization: Bearer <API key>" : "unknown API key (or not a Bearer token)", {}, { "www-authenticate": "Bearer" });
    }
    c.set("who", who);
    await next();
  });

  for (const [id, r] of routes) if (!r.public) register(id, r);

  /**
   * The caller's sandbox, or 404 — the same 404 whether it does not exist or belongs to another key.
   * A paused one is resumed first, unless the operation only reads what the server keeps about it.
   */
  async function find(c: Context<Env>, op: OperationId): Promise<Entry> {
    const id = c.req.param("id") ?? "";
    const e = registry.get(c.get("who").name, id);
    if (!e) {
      const refused = registry.refusedReason(id);
      throw notFound(refused ? `sandbox ${id} was not loaded from the state directory and cannot be resumed: ${refused}` : `no sandbox ${JSON.stringify(id)} for this API key`);
    }
    if (!KEEP_PAUSED.has(op)) await registry.resume(e);
    if (e.paused) return e;
    if (e.sandbox.closed && c.req.method !== "GET" && c.req.method !== "DELETE") {
      throw new HttpError(410, "SANDBOX_CLOSED", `sandbox ${id} is closed; delete it and create a new one`);
    }
    return e;
  }

  /** A run or command may not ask for more time than the key's quota (400 naming timeoutMs). */
  function checkRunQuota(c: Context<Env>, timeoutMs: number | undefined): void {
    const max = c.get("who").quota.maxRunMs;
    if (timeoutMs !== undefined && timeoutMs > max) throw invalid("timeoutMs", `${timeoutMs} is over this API key's quota of ${max} (maxRunMs)`);
  }

  /** commands.run with metrics; a limit the sandbox survives is a result with `limitHit`, one that closed it is thrown (422). */
  async function observedCommand(sb: Sandbox, req: CommandRequest, sink?: Sink): Promise<CommandResultBody> {
    const opts = commandOptions(req, sink);
    try {
      return counted(commandBody(await sb.commands.run(req.cmd, opts)));
    } catch (e) {
      throw countedFailure(e);
    }
  }

  /** Start a background command, remember it for its routes, and count it in the metrics when it ends. */
  async function startBackground(sb: Sandbox, req: CommandRequest): Promise<CommandHandle> {
    const handle = await sb.commands.run(req.cmd, { ...commandOptions(req), background: true });
    let mine = background.get(sb);
    if (!mine) background.set(sb, (mine = new Map()));
    const t: Tracked = { handle };
    mine.delete(handle.pid); // a pid the guest reused: the newer command has it (and goes last)
    mine.set(handle.pid, t);
    const forgetOld = (all: Map<number, Tracked>) => {
      const ended = [...all.values()].filter((x) => x.ended);
      for (const x of ended.slice(0, Math.max(0, ended.length - KEPT_ENDED_COMMANDS))) all.delete(x.handle.pid);
    };
    handle.wait().then(
      (r) => {
        t.ended = { result: counted(commandBody(r)) };
        forgetOld(mine);
      },
      (e: unknown) => {
        t.ended = { error: countedFailure(e) };
        forgetOld(mine);
      },
    );
    return handle;
  }

  /** The background command {pid} of the caller's sandbox, or 404. */
  function tracked(c: Context<Env>, entry: Entry): Tracked {
    const raw = c.req.param("pid") ?? "";
    const t = /^[1-9][0-9]{0,9}$/.test(raw) ? background.get(entry.sandbox)?.get(Number(raw)) : undefined;
    if (!t) throw notFound(`no background command with pid ${JSON.stringify(raw)} in sandbox ${entry.id}`);
    return t;
  }

  function counted(r: CommandResultBody): CommandResultBody {
    metrics.commands.inc({ outcome: r.limitHit ? "limit" : r.exitCode === 0 ? "ok" : "nonzero" });
    if (r.limitHit) metrics.limitFailures.inc({ limit: r.limitHit });
    return r;
  }

  function countedFailure(e: unknown): Error {
    metrics.commands.inc({ outcome: e instanceof LimitError ? "limit" : "failed" });
    if (e instanceof LimitError) metrics.limitFailures.inc({ limit: e.limit });
    return e as Error;
  }

  async function observedRun(sb: Sandbox, code: string, opts: Parameters<Sandbox["runCode"]>[1]): Promise<RunResult> {
    const t0 = performance.now();
    try {
      const r = await sb.runCode(code, opts);
      metrics.runs.inc({ outcome: r.limitHit ? "limit" : r.error ? "guest_error" : "ok" });
      if (r.limitHit) metrics.limitFailures.inc({ limit: r.limitHit });
      return r;
    } catch (e) {
      metrics.runs.inc({ outcome: e instanceof LimitError ? "limit" : "failed" });
      if (e instanceof LimitError) metrics.limitFailures.inc({ limit: e.limit });
      throw e;
    } finally {
      metrics.runSeconds.observe((performance.now() - t0) / 1000);
    }
  }

  return app;
}

/**
 * Answer with Server-Sent Events: `stdout`/`stderr` chunks and `display` results as they come,
 * then one `result` or `error`. A dropped connection aborts the operation through the sink's signal.
 */
function sse<C extends Context>(c: C, op: (sink: Sink) => Promise<unknown>): Response {
  return streamSSE(c, async (stream) => {
    const ac = new AbortController();
    stream.onAbort(() => ac.abort());
    // Chunks arrive through synchronous callbacks; chain the writes to keep their order.
    let chain: Promise<unknown> = Promise.resolve();
    const send = (event: string, data: unknown) => {
      chain = chain.then(() => stream.writeSSE({ event, data: JSON.stringify(data) })).catch(() => undefined);
    };
    try {
      send("result", await op({ signal: ac.signal, onStdout: (s) => send("stdout", s), onStderr: (s) => send("stderr", s), onResult: (r) => send("display", r) }));
    } catch (e) {
      const { status, body } = toHttp(e);
      send("error", { ...body, status });
    }
    await chain;
  });
}

/** A command request's options for the library (the caller's hang-up and stream, when given). */
function commandOptions(req: CommandRequest, sink?: Sink): CommandOptions {
  const opts: CommandOptions = sink ? { signal: sink.signal, onStdout: sink.onStdout, onStderr: sink.onStderr } : {};
  if (req.timeoutMs !== undefined) opts.timeoutMs = req.timeoutMs;
  if (req.cwd !== undefined) opts.cwd = req.cwd;
  if (req.env !== undefined) opts.env = req.env;
  if (req.stdin !== undefined) opts.stdin = req.stdin;
  if (req.stdinBase64 !== undefined) opts.stdin = new Uint8Array(Buffer.from(req.stdinBase64, "base64"));
  return opts;
}

function commandBody(r: Awaited<ReturnType<CommandHandle["wait"]>>): CommandResultBody {
  const body: CommandResultBody = { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr, durationMs: r.durationMs };
  if (r.signal) body.signal = r.signal;
  if (r.limitHit) body.limitHit = r.limitHit;
  return body;
}

function commandInfo(h: CommandHandle) {
  return { pid: h.pid, cmd: h.cmd, argv: [...h.argv], cwd: h.cwd, startedAt: h.startedAt.toISOString() };
}

function commandStatusOf(t: Tracked): z.output<typeof commandStatus> {
  const base = commandInfo(t.handle);
  if (!t.ended) return { ...base, status: "running", stdout: t.handle.stdout, stderr: t.handle.stderr };
  if ("error" in t.ended) return { ...base, status: "failed", stdout: t.handle.stdout, stderr: t.handle.stderr, error: t.ended.error.message };
  return { ...base, status: "exited", ...t.ended.result };
}

/** This server's reverse-proxy URL of `port` of the sandbox (as the client reached the server). */
function proxyUrl(c: Context, e: Entry, port: number): string {
  return `${new URL(c.req.url).origin}/sandboxes/${encodeURIComponent(e.id)}/ports/${port}/`;
}

function info(e: Entry, node?: string) {
  const o = e.sandbox.options;
  const now = e.sandbox.info;
  return {
    id: e.id,
    tier: o.tier,
    ...(now.tier === "auto" ? { current: now.current } : {}),
    language: o.language,
    limits: o.limits,
    seed: e.sandbox.seed,
    status: e.paused ? "paused" : e.sandbox.closed ? "closed" : "running",
    idleAction: e.idleAction,
    createdAt: new Date(e.createdAt).toISOString(),
    lastActiveAt: new Date(e.lastActiveAt).toISOString(),
    idleTimeoutMs: e.idleTimeoutMs,
    // Running: when the idle timeout acts; paused: when the paused sandbox is deleted.
    expiresAt: new Date(e.paused ? e.paused.expiresAt : e.lastActiveAt + e.idleTimeoutMs).toISOString(),
    ...(node !== undefined ? { node } : {}),
  };
}

/** `?path=`, checked early (before a body is read) by the library's own guest-path rule. */
function guestPath(c: Context<Env>): string {
  const p = c.req.query("path");
  if (p === undefined) throw invalid("path", "query parameter ?path= is required");
  return normalizeGuestPath(p);
}

/**
 * A sandbox for `who` from a create request's body: the library's sandbox options (checked by its
 * resolver, once) plus idleTimeoutMs and idleAction, held to the key's quotas (asked past one: 400
 * naming the field; left to the default: capped), its mounts to --mount-root and its network to
 * the operator's grant. The native API and the E2B-compatible one create through this.
 */
export async function createChecked(o: Pick<AppOptions, "registry" | "mountRoots" | "netAllow">, who: Principal, body: unknown): Promise<Entry> {
  const isObject = typeof body === "object" && body !== null && !Array.isArray(body);
  const { idleTimeoutMs, idleAction, pool, ...input } = (isObject ? body : {}) as Record<string, unknown>;
  if (pool !== undefined) throw new InvalidOptionsError([{ path: "pool", message: "unknown option (the server decides)" }]);
  const extras = parseOptions(createSandboxExtras, { idleTimeoutMs, idleAction });
  const resolved = resolveSandboxOptions(isObject ? input : body);
  const opts = resolved.options;
  const limits = opts.limits as Record<string, number>;
  const q = who.quota;
  const capped = [
    ["memoryMb", "maxMemoryMb"],
    ["timeoutMs", "maxRunMs"],
    ["cpus", "maxCpus"],
    ["diskMb", "maxDiskMb"],
  ] as const;
  for (const [limit, quota] of capped) {
    const value = limits[limit];
    if (value === undefined) continue; // a limit of the other tier
    if (resolved.given.limits.has(limit) && value > q[quota]) {
      throw invalid(`limits.${limit}`, `${value} is over this API key's quota of ${q[quota]} (${quota})`);
    }
    limits[limit] = Math.min(value, q[quota]);
  }
  resolved.mounts.forEach((m, i) => checkMount(m, i, o.mountRoots));
  // Every tier's grant (nano's fetch broker, heavy's egress proxy) is the operator's to give.
  if ("network" in opts && opts.network) checkNetwork(opts.network.allow, who, o.netAllow);
  return o.registry.create(who, { ...opts, pool: true }, extras.idleTimeoutMs, extras.idleAction);
}

/**
 * A network grant is the operator's to give: every `network.allow` entry a client asks for must be
 * within (withinRule, after the parsing the sandbox applies) an entry of its API key's `allowNet`
 * when the key has one, else of the server's --allow-net list. `network.deny` only narrows the
 * grant, so a client may list any deny entries it likes.
 */
function checkNetwork(asked: readonly string[], who: Principal, serverAllow: readonly string[]): void {
  const own = who.allowNet !== undefined;
  const granted = parseAllowList(who.allowNet ?? serverAllow);
  const source = own ? `API key "${who.name}"'s allowNet` : "this server's --allow-net";
  if (granted.length === 0) {
    throw invalid("network", own ? `API key "${who.name}" is granted no network access (its allowNet is empty)` : "this server grants no network access (start it with --allow-net HOST)");
  }
  parseAllowList(asked).forEach((rule, i) => {
    if (!granted.some((g) => withinRule(rule, g))) {
      throw invalid(`network.allow.${i}`, `${JSON.stringify(asked[i])} is not within the hosts ${source} grants (${(who.allowNet ?? serverAllow).join(", ")})`);
    }
  });
}

export function checkMount(m: { hostPath: string; readOnly: boolean }, i: number, roots: string[]): void {
  const field = `mounts.${i}.hostPath`;
  if (roots.length === 0) throw invalid(`mounts.${i}`, "this server allows no mounts (start it with --mount-root DIR)");
  if (!m.readOnly) throw invalid(`mounts.${i}.readOnly`, "the HTTP API grants read-only mounts only");
  let real: string;
  try {
    real = realpathSync(m.hostPath);
  } catch {
    throw invalid(field, `${JSON.stringify(m.hostPath)} does not exist`);
  }
  if (!roots.some((r) => real === r || real.startsWith(r.endsWith(path.sep) ? r : r + path.sep))) {
    throw invalid(field, `${JSON.stringify(m.hostPath)} is not under a directory this server allows (--mount-root)`);
  }
}

/** The request body as bytes, refusing (413) past `max` whatever Content-Length claims. */
function readBody(c: Context, max: number): Promise<Uint8Array> {
  return readCappedBody(c.req.raw, max, () => new HttpError(413, "BODY_TOO_LARGE", `request body is over the server's limit of ${max} bytes`, { value: max }));
}

async function readJson(c: Context, max: number, optional = false): Promise<unknown> {
  const v = await readJsonRequest(c.req.raw, max, optional);
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new HttpError(400, "INVALID_JSON", "request body must be a JSON object");
  return v;
}
