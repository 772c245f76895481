// The E2B-compatible surface: E2B's SDKs (`e2b`, `@e2b/code-interpreter`) pointed at agentbox with
// E2B_API_URL=<server>/e2b, E2B_SANDBOX_URL=<server>/e2b/sandbox and an agentbox key as E2B_API_KEY.
// The control plane (REST/JSON, E2B's OpenAPI shapes) is served here; in-sandbox traffic comes to
// /e2b/sandbox/* with the E2b-Sandbox-Id and E2b-Sandbox-Port headers and goes to the daemon's
// face (envd.ts: process and filesystem over Connect, /files) or the code interpreter's
// (interpreter.ts). Both are a second face of the native API's registry: the same sandboxes,
// keys, quotas and checks.
import { createHash, timingSafeEqual } from "node:crypto";
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { Sandbox } from "../../index.js";
import { parseOptions } from "../../policy/options.js";
import { createChecked, type AppOptions } from "../app.js";
import { HttpError, toHttp } from "../http-errors.js";
import { e2bApiKey, type Principal } from "../keys.js";
import type { Entry } from "../registry.js";
import type { SnapshotStore } from "../snapshots.js";
import { readJsonRequest } from "../body.js";
import { envdApp } from "./envd.js";
import { interpreterApp } from "./interpreter.js";
import { E2bSessions, ENVD_VERSION, MAX_LIFETIME_MS, type E2bSession } from "./sessions.js";

export { E2bSessions } from "./sessions.js";

/** The port envd listens on in an E2B sandbox, and the code interpreter's (the SDKs send them as E2b-Sandbox-Port). */
export const ENVD_PORT = 49983;
export const INTERPRETER_PORT = 49999;

/** What the in-sandbox faces get with each request (Hono bindings). */
export interface SandboxBindings {
  entry: Entry;
  session: E2bSession;
  who: Principal;
}
export type SandboxEnv = { Bindings: SandboxBindings };

export interface E2bOptions extends Pick<AppOptions, "registry" | "keys" | "mountRoots" | "netAllow" | "maxJsonBytes" | "maxUploadBytes" | "log"> {
  sessions: E2bSessions;
  /** The keys' snapshots, shared with the native API (E2B's snapshot ids are these ids). */
  snapshots: SnapshotStore;
}

type ControlEnv = { Variables: { who: Principal } };

/** Templates: what each makes. Unknown names are refused with this list. */
export const TEMPLATES: Record<string, Record<string, unknown>> = {
  "code-interpreter-v1": { tier: "heavy", language: "python", image: "data" },
  "code-interpreter": { tier: "heavy", language: "python", image: "data" },
  base: { tier: "heavy", language: "python", image: "base" },
  "agentbox-python": { tier: "nano", language: "python" },
  "agentbox-javascript": { tier: "nano", language: "javascript" },
};

const metadataSchema = z.record(z.string().min(1).max(256), z.string().max(1024)).refine((m) => Object.keys(m).length <= 64, "at most 64 entries");
const envVarsSchema = z.record(z.string().min(1).max(256), z.string().max(65_536));

const createBody = z.object({
  templateID: z.string().min(1).max(256),
  timeout: z.int().min(1).max(MAX_LIFETIME_MS / 1000).optional(),
  metadata: metadataSchema.optional(),
  envVars: envVarsSchema.optional(),
  autoPause: z.boolean().optional(),
  allow_internet_access: z.boolean().optional(),
  network: z
    .object({
      allowOut: z.array(z.string().max(512)).max(256).optional(),
      denyOut: z.array(z.string().max(512)).max(256).optional(),
    })
    .loose()
    .optional(),
  secure: z.boolean().optional(),
}).loose();

const timeoutBody = z.object({ timeout: z.int().min(0).max(MAX_LIFETIME_MS / 1000) }).loose();
const connectBody = z.object({ timeout: z.int().min(0).max(MAX_LIFETIME_MS / 1000).optional() }).loose();

/** E2B's error body: `{ code, message }` with the HTTP status as the code. */
function e2bError(c: Context, status: number, message: string, headers: Record<string, string> = {}): Response {
  return c.json({ code: status, message }, status as 400, headers);
}

export function createE2bApp(o: E2bOptions): Hono {
  const app = new Hono();
  const control = new Hono<ControlEnv>();
  const { registry, sessions } = o;
  const envd = envdApp(o);
  const interpreter = interpreterApp(o);

  const onError = (e: unknown, c: Context): Response => {
    const { status, body, headers } = toHttp(e);
    if (status >= 500 && status !== 501 && !(e instanceof HttpError)) o.log(`error: e2b ${c.req.method} ${c.req.path}: ${(e as Error)?.stack ?? String(e)}`);
    return e2bError(c, status, body.error.message, headers);
  };
  app.onError(onError);
  control.onError(onError);

  // ---- In-sandbox traffic: routed by E2b-Sandbox-Id / E2b-Sandbox-Port, authorised by the session's token.
  app.all("/sandbox/*", async (c) => {
    const id = c.req.header("e2b-sandbox-id");
    const port = Number(c.req.header("e2b-sandbox-port"));
    if (!id) return e2bError(c, 400, "missing E2b-Sandbox-Id header (set E2B_SANDBOX_URL only together with an SDK that sends it)");
    const found = sessions.find(id);
    // E2B's proxy answers 502 for a sandbox that is not running; the SDKs read it as "not running".
    if (!found) return e2bError(c, 502, `The sandbox ${id} was not found (it was killed, timed out, or was never connected through the E2B API)`);
    // The code interpreter SDK sends the token as E2B-Traffic-Access-Token on its /contexts
    // requests (X-Access-Token only on /execute): the create/connect answer gives it as both.
    const token = c.req.header("x-access-token") ?? c.req.header("e2b-traffic-access-token");
    if (!E2bSessions.tokenMatches(found.session, token)) {
      return e2bError(c, 401, "missing or wrong X-Access-Token (or E2B-Traffic-Access-Token) for this sandbox");
    }
    if (port !== ENVD_PORT && port !== INTERPRETER_PORT) {
      return e2bError(c, 502, `port ${Number.isFinite(port) ? port : "(missing E2b-Sandbox-Port)"} of sandbox ${id} is not served by agentbox's E2B surface (envd ${ENVD_PORT}, code interpreter ${INTERPRETER_PORT})`);
    }
    const url = new URL(c.req.url);
    url.pathname = url.pathname.replace(/^\/e2b\/sandbox/, "") || "/";
    return forward(c, found, port, new Request(url, c.req.raw));
  });

  /** A request for `found`'s sandbox, authorised, to its envd or interpreter face (a paused sandbox resumed first). */
  const forward = async (c: Context, { session, entry }: { session: E2bSession; entry: Entry }, port: number, inner: Request): Promise<Response> => {
    if (entry.paused) await registry.resume(entry);
    if (entry.sandbox.closed) return e2bError(c, 502, `The sandbox ${entry.id} is not running: ${entry.sandbox.closed}`);
    const bindings: SandboxBindings = { entry, session, who: session.who };
    return port === ENVD_PORT ? envd.fetch(inner, bindings) : interpreter.fetch(inner, bindings);
  };

  // ---- Signed file URLs (sandbox.uploadUrl/downloadUrl): `/files` at the root of E2B_SANDBOX_URL's
  // origin (the SDK builds them with `new URL("/files", E2B_SANDBOX_URL)`), with neither the sandbox
  // id nor its token: the signature names the sandbox, being checked against every live session's token.
  app.on(["GET", "POST"], "/files", (c) => {
    const q = new URL(c.req.url).searchParams;
    const signature = q.get("signature");
    if (!signature) return e2bError(c, 401, "a /files URL without the E2b-Sandbox-Id header needs ?signature= (from sandbox.uploadUrl() or downloadUrl())");
    const expiration = q.get("signature_expiration");
    if (expiration !== null && !/^\d{1,12}$/.test(expiration)) return e2bError(c, 400, "signature_expiration must be a Unix time in seconds");
    if (expiration !== null && Number(expiration) * 1000 < Date.now()) return e2bError(c, 401, "the signed URL has expired");
    const operation = c.req.method === "GET" ? "read" : "write";
    const found = signedSession(sessions, { path: q.get("path") ?? "", operation, user: q.get("username") ?? "", expiration, signature });
    if (!found) return e2bError(c, 401, "the URL's signature is not valid for any running sandbox (wrong path, user, operation or token)");
    const url = new URL(c.req.url);
    url.pathname = "/files";
    return forward(c, found, ENVD_PORT, new Request(url, c.req.raw));
  });

  // ---- The control plane.
  control.get("/health", (c) => c.json({ status: "ok" }));
  control.use(async (c, next) => {
    const key = e2bApiKey(c.req.header("x-api-key"), c.req.header("authorization"));
    const who = o.keys.authenticate(key);
    if (!who) return e2bError(c, 401, key === undefined ? "missing X-API-KEY (set E2B_API_KEY to an agentbox API key)" : "Invalid API key: it is not one of this agentbox server's keys");
    c.set("who", who);
    await next();
  });

  control.post("/v2/sandboxes", async (c) => {
    const who = c.get("who");
    const body = parseOptions(createBody, await readJsonRequest(c.req.raw, o.maxJsonBytes));
    const lifetimeMs = (body.timeout ?? 300) * 1000;
    const onTimeout = body.autoPause ? "pause" : "kill";
    const template = TEMPLATES[body.templateID];
    // A snapshot's id is a template too (E2B: Sandbox.create(snapshotId)): a new sandbox from it.
    const snap = template ? undefined : o.snapshots.get(who.name, body.templateID);
    if (snap) {
      if (body.envVars && Object.keys(body.envVars).length > 0) throw new HttpError(400, "INVALID_OPTIONS", "envVars: a sandbox made from a snapshot keeps the snapshot's environment");
      const entry = await registry.restore(who, snap.snapshot, Math.max(1000, lifetimeMs), onTimeout);
      const session = sessions.ensure(entry, who, { templateId: body.templateID, metadata: body.metadata ?? {}, lifetimeMs, onTimeout });
      return c.json(createdBody(session), 201);
    }
    if (!template) return e2bError(c, 404, `template '${body.templateID}' not found (agentbox serves: ${Object.keys(TEMPLATES).join(", ")}, and this key's snapshot ids)`);
    const native: Record<string, unknown> = { ...template, idleTimeoutMs: Math.max(1000, lifetimeMs), idleAction: onTimeout };
    if (body.envVars && Object.keys(body.envVars).length > 0) native.env = body.envVars;
    const network = networkOf(body, who, o.netAllow);
    if (network) native.network = network;
    const entry = await createChecked(o, who, native);
    const session = sessions.ensure(entry, who, { templateId: body.templateID, metadata: body.metadata ?? {}, lifetimeMs, onTimeout });
    return c.json(createdBody(session), 201);
  });

  const list = (c: Context<ControlEnv>) => {
    const who = c.get("who");
    const q = new URL(c.req.url).searchParams;
    const wantMeta = metadataFilter(q.get("metadata"));
    const states = (q.get("state") ?? "").split(",").filter(Boolean);
    const template = q.get("template");
    const startedAfter = q.get("startedAfter") ? Date.parse(q.get("startedAfter")!) : undefined;
    const rows = registry
      .list(who.name)
      .map((e) => ({ e, s: sessions.ensure(e, who) }))
      .filter(({ e, s }) => (states.length === 0 || states.includes(e.paused ? "paused" : "running")) && Object.entries(wantMeta).every(([k, v]) => s.metadata[k] === v))
      .filter(({ s }) => !template || s.templateId === template)
      .filter(({ s }) => startedAfter === undefined || s.startedAt > startedAfter)
      .map(({ e, s }) => detail(e, s));
    if (q.get("order") === "desc") rows.reverse();
    const limit = Math.min(Math.max(Number(q.get("limit") ?? 100) || 100, 1), 1000);
    const from = Number(q.get("nextToken") ?? 0) || 0;
    const page = rows.slice(from, from + limit);
    const headers: Record<string, string> = from + limit < rows.length ? { "x-next-token": String(from + limit) } : {};
    return c.json(page, 200, headers);
  };
  control.get("/v2/sandboxes", list);
  control.get("/sandboxes", list);

  /** The caller's sandbox named in the path, with its session (made on first sight), or a 404. */
  const target = (c: Context<ControlEnv>): { entry: Entry; session: E2bSession } => {
    const id = c.req.param("id") ?? "";
    const entry = registry.get(c.get("who").name, id);
    if (!entry) throw new HttpError(404, "NOT_FOUND", `sandbox ${id} not found`);
    return { entry, session: sessions.ensure(entry, c.get("who")) };
  };

  control.get("/sandboxes/:id", (c) => {
    const { entry, session } = target(c);
    return c.json(detail(entry, session));
  });
  control.delete("/sandboxes/:id", async (c) => {
    const { entry } = target(c);
    sessions.drop(entry.id);
    await registry.remove(entry);
    return c.body(null, 204);
  });
  control.post("/sandboxes/:id/timeout", async (c) => {
    const { session } = target(c);
    const body = parseOptions(timeoutBody, await readJsonRequest(c.req.raw, o.maxJsonBytes));
    sessions.extend(session, body.timeout * 1000);
    return c.body(null, 204);
  });
  control.post("/sandboxes/:id/refreshes", async (c) => {
    const { session } = target(c);
    const raw = await readJsonRequest(c.req.raw, o.maxJsonBytes, true);
    const duration = parseOptions(z.object({ duration: z.int().min(0).max(3600).optional() }).loose(), raw).duration;
    sessions.extend(session, Math.max(session.endAt - Date.now(), (duration ?? 60) * 1000));
    return c.body(null, 204);
  });
  control.post("/sandboxes/:id/pause", async (c) => {
    const { entry } = target(c);
    if (entry.paused) return e2bError(c, 409, `sandbox ${entry.id} is already paused`);
    await registry.pause(entry);
    return c.body(null, 204);
  });
  const resume = async (c: Context<ControlEnv>, fresh: boolean) => {
    const { entry, session } = target(c);
    const body = parseOptions(connectBody, await readJsonRequest(c.req.raw, o.maxJsonBytes, true));
    const wasPaused = !!entry.paused;
    if (fresh && !wasPaused) return e2bError(c, 409, `sandbox ${entry.id} is not paused`);
    await registry.resume(entry);
    if (body.timeout !== undefined) sessions.extend(session, body.timeout * 1000);
    else if (session.endAt < Date.now() + 1000) sessions.extend(session, 300_000);
    return c.json(createdBody(session), wasPaused ? 201 : 200);
  };
  control.post("/v2/sandboxes/:id/connect", (c) => resume(c, false));
  control.post("/sandboxes/:id/connect", (c) => resume(c, false));
  control.post("/sandboxes/:id/resume", (c) => resume(c, true));
  // Snapshots (the native API's, by the same ids) and forks.
  const snapshotNames = new Map<string, string>();
  control.post("/sandboxes/:id/snapshots", async (c) => {
    const { entry } = target(c);
    const body = parseOptions(z.object({ name: z.string().min(1).max(128).optional() }).loose(), await readJsonRequest(c.req.raw, o.maxJsonBytes, true));
    const s = await o.snapshots.add(c.get("who"), entry.id, () => registry.use(entry, (sb) => sb.snapshot()));
    if (body.name) snapshotNames.set(s.id, body.name);
    return c.json({ snapshotID: s.id, names: body.name ? [body.name] : [] }, 201);
  });
  control.get("/snapshots", (c) => {
    const q = new URL(c.req.url).searchParams;
    const rows = o.snapshots
      .list(c.get("who").name)
      .filter((s) => !q.get("sandboxID") || s.sandboxId === q.get("sandboxID"))
      .filter((s) => !q.get("name") || snapshotNames.get(s.id) === q.get("name"))
      .map((s) => ({ snapshotID: s.id, names: snapshotNames.has(s.id) ? [snapshotNames.get(s.id)!] : [] }));
    return c.json(rows);
  });
  control.delete("/templates/:id", async (c) => {
    const id = c.req.param("id");
    const s = o.snapshots.get(c.get("who").name, id);
    if (!s) return e2bError(c, 404, `snapshot ${id} not found (agentbox's built-in templates cannot be deleted)`);
    snapshotNames.delete(id);
    await o.snapshots.remove(id);
    return c.body(null, 204);
  });
  control.post("/sandboxes/:id/fork", async (c) => {
    const { entry, session } = target(c);
    const who = c.get("who");
    const body = parseOptions(z.object({ count: z.int().min(1).max(64).optional(), timeout: z.int().min(1).max(MAX_LIFETIME_MS / 1000).optional() }).loose(), await readJsonRequest(c.req.raw, o.maxJsonBytes, true));
    const lifetimeMs = (body.timeout ?? 300) * 1000;
    // One snapshot for every fork, not the key's to keep: removed once they run.
    const snap = await registry.use(entry, (sb) => sb.snapshot());
    const out: ({ sandbox: ReturnType<typeof createdBody> } | { error: { code: number; message: string } })[] = [];
    try {
      for (let i = 0; i < (body.count ?? 1); i++) {
        try {
          const fork = await registry.restore(who, snap, Math.max(1000, lifetimeMs), session.onTimeout);
          out.push({ sandbox: createdBody(sessions.ensure(fork, who, { templateId: session.templateId, metadata: { ...session.metadata }, lifetimeMs, onTimeout: session.onTimeout })) });
        } catch (e) {
          const { status, body: err } = toHttp(e);
          out.push({ error: { code: status, message: err.error.message } });
        }
      }
    } finally {
      await snap.remove();
    }
    return c.json(out, 201);
  });
  control.get("/sandboxes/:id/metrics", (c) => {
    target(c);
    return c.json([]);
  });
  control.all("*", (c) => e2bError(c, 404, `agentbox's E2B surface has no route ${c.req.method} ${c.req.path.replace(/^\/e2b/, "")}`));

  app.route("/", control);
  return app;
}

/**
 * The session whose token made `signature` (E2B's v1: base64 SHA-256 of
 * `path:operation:user:token[:expiration]`, padding stripped), with its sandbox; every live session
 * is checked, each in constant time.
 */
export function signedSession(sessions: E2bSessions, s: { path: string; operation: "read" | "write"; user: string; expiration: string | null; signature: string }): { session: E2bSession; entry: Entry } | undefined {
  const given = Buffer.from(s.signature, "utf8");
  let match: E2bSession | undefined;
  for (const session of sessions.all()) {
    const raw = `${s.path}:${s.operation}:${s.user}:${session.token}` + (s.expiration === null ? "" : `:${s.expiration}`);
    const want = Buffer.from("v1_" + createHash("sha256").update(raw, "utf8").digest("base64").replace(/=+$/, ""), "utf8");
    if (want.length === given.length && timingSafeEqual(want, given)) match = session;
  }
  return match ? sessions.find(match.id) : undefined;
}

/** The create/connect answer: what the SDK needs to reach the sandbox. */
function createdBody(s: E2bSession) {
  return {
    sandboxID: s.id,
    templateID: s.templateId,
    clientID: "agentbox",
    envdVersion: ENVD_VERSION,
    envdAccessToken: s.token,
    // The same token: @e2b/code-interpreter sends only this one with its /contexts requests.
    trafficAccessToken: s.token,
    domain: null,
  };
}

/** GET /sandboxes/{id} and list rows: E2B's SandboxDetail / ListedSandbox. */
function detail(e: Entry, s: E2bSession) {
  const opts = e.sandbox.options as Sandbox["options"] & { limits: Record<string, number> };
  const limits = opts.limits;
  const net = (opts as { network?: { allow: readonly string[]; deny?: readonly string[] } }).network;
  return {
    sandboxID: e.id,
    templateID: s.templateId,
    clientID: "agentbox",
    startedAt: new Date(s.startedAt).toISOString(),
    endAt: new Date(s.endAt).toISOString(),
    cpuCount: Math.max(1, Math.ceil(limits.cpus ?? 1)),
    memoryMB: limits.memoryMb ?? 0,
    diskSizeMB: limits.diskMb ?? Math.round((limits.vfsBytes ?? 0) / 1048576),
    metadata: s.metadata,
    state: e.paused ? "paused" : "running",
    envdVersion: ENVD_VERSION,
    allowInternetAccess: !!net && net.allow.length > 0,
    network: net ? { allowOut: [...net.allow], denyOut: [...(net.deny ?? [])] } : { allowOut: [], denyOut: [] },
    lifecycle: { onTimeout: s.onTimeout, autoResume: s.onTimeout === "pause" },
    volumeMounts: [],
  };
}

/**
 * The sandbox's network policy from E2B's create fields. E2B's default is internet access on; here
 * that is whatever the operator grants this key (--allow-net or the key's allowNet), none if
 * nothing is granted. `allowOut` narrows it to those entries (checked against the grant);
 * `denyOut` adds deny entries ("0.0.0.0/0", E2B's "everything else", is the default here).
 */
function networkOf(body: z.output<typeof createBody>, who: Principal, netAllow: readonly string[]): { allow: string[]; deny?: string[] } | undefined {
  if (body.allow_internet_access === false) return undefined;
  const granted = [...(who.allowNet ?? netAllow)];
  const deny = (body.network?.denyOut ?? []).filter((d) => d !== "0.0.0.0/0" && d !== "::/0");
  const denyAll = (body.network?.denyOut ?? []).some((d) => d === "0.0.0.0/0");
  const allow = body.network?.allowOut ?? (denyAll ? [] : granted);
  if (allow.length === 0) return undefined;
  return deny.length > 0 ? { allow, deny } : { allow };
}

/** `metadata=k%3Dv%26k2%3Dv2` (the SDK URL-encodes a query string into one parameter). */
function metadataFilter(raw: string | null): Record<string, string> {
  if (!raw) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(raw)) out[decodeURIComponent(k)] = decodeURIComponent(v);
  return out;
}

