// The HTTP API's route table: one entry per operation (method, path, operationId, words, the
// request it takes, the responses it may answer). app.ts registers a Hono route per entry, with
// the handler of the same operationId, and openApiDocument() writes the OpenAPI `paths` from the
// same entries, so a route cannot exist without its documentation or the other way round.
// Adding a route: an entry here and a handler in app.ts (the compiler asks for it).
import { z } from "zod";
import { commandRequest, createSandboxRequest, exposePortRequest, forkRequest, keepAliveRequest, killCommandRequest, responseSchemas, restoreRequest, runRequest } from "./schemas.js";

/**
 * What an operation reads besides its path: a JSON body parsed by `schema` (an empty body is `{}`
 * when not `required`), or raw bytes (the upload limit applies).
 */
export type BodySpec =
  | { readonly kind: "json"; readonly schema: z.ZodType; readonly required: boolean }
  /** JSON documented by `schema` but checked by the handler itself (sandbox options: the library's resolver names the field and the tier). */
  | { readonly kind: "json-resolved"; readonly schema: z.ZodType; readonly required: boolean }
  | { readonly kind: "bytes" };

export interface RouteSpec {
  readonly method: "get" | "post" | "put" | "delete";
  /** OpenAPI form; `{id}` is the caller's sandbox (looked up, 404/410, before anything else is read). */
  readonly path: `/${string}`;
  readonly summary: string;
  readonly description?: string;
  /** Answered without an API key. */
  readonly public?: true;
  /**
   * A reverse proxy (`{port}`, then `{rest}`: the rest of the path): every method is answered, the
   * body is streamed to the guest unread; the table's method is the one the document shows.
   */
  readonly proxy?: true;
  /** `?path=`: an absolute guest path, checked after the sandbox lookup and before the body. */
  readonly query?: "path";
  readonly body?: BodySpec;
  /** Status → OpenAPI response object (see json(), err() and friends below). */
  readonly responses: Readonly<Record<string, object>>;
}

type Name = keyof typeof responseSchemas;
const ref = (name: Name) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: Name) => ({ content: { "application/json": { schema: ref(name) } } });
const err = (description: string) => ({ description, ...json("Error") });
const bytes = { type: "string", format: "binary", contentMediaType: "application/octet-stream" };
const common = {
  "401": err("missing or unknown API key"),
  "404": err("no such sandbox for this key"),
  "410": err("the sandbox is closed (a limit killed it, or its worker died); in cluster mode also: its node left the cluster (NODE_GONE)"),
  "503": err("cluster mode: the sandbox's node does not answer yet (NODE_UNREACHABLE, with Retry-After), or etcd is unreachable (CLUSTER_UNAVAILABLE)"),
};
const jsonBody = {
  "400": err("invalid body (INVALID_JSON, or INVALID_OPTIONS with error.issues naming each field)"),
  "413": err("request body over the server's limit (4 MiB by default; BODY_TOO_LARGE)"),
};
const fsCommon = {
  ...common,
  "400": err("missing or invalid ?path= (not absolute, a `..` segment, NUL)"),
  "404": err("no such sandbox for this key, or no such file (FS_ERROR, error.errno ENOENT)"),
};
const timeoutQuota = err("invalid body, or timeoutMs over this key's quota (maxRunMs)");
const notHeavy = err('the sandbox is nano-tier (create it with "tier": "heavy" or "auto"), or a tier "auto" sandbox could not start the heavy tier it needs (TIER_UNAVAILABLE; it stays on the nano tier)');
const replayFailed = err('a tier "auto" sandbox could not move to the heavy tier: a cell that ran on the nano tier failed when replayed there (REPLAY_FAILED, error.cell names the runCode call), or its files could not be copied; it stays on the nano tier');
const eventStream = (result: "RunResult" | "CommandResult") => {
  // A run's rich results stream too; a command has none.
  const display = result === "RunResult";
  return {
    description:
      "event stream: `stdout` and `stderr` events (data: a JSON string, one chunk as it was written)" +
      (display ? ", `display` events (data: DisplayResult JSON, one rich result as it happened, in order; the same ones are in the final RunResult's `results`)" : "") +
      `, then exactly one \`result\` (data: ${result} JSON) ` +
      "or `error` (data: Error JSON with `status`, the status the non-streaming route would have answered)",
    content: {
      "text/event-stream": {
        schema: { type: "string" },
        // OpenAPI 3.1 cannot type the events of a stream (3.2's itemSchema can): named here for readers and generators.
        "x-events": { stdout: { type: "string" }, stderr: { type: "string" }, ...(display ? { display: ref("DisplayResult") } : {}), result: ref(result), error: ref("Error") },
      },
    },
  };
};
const jsonOf = <S extends z.ZodType>(schema: S, required = true) => ({ kind: "json", schema, required }) as const;

/** Every operation, keyed by operationId, in the order the document lists them. */
export const ROUTES = {
  getHealth: { method: "get", path: "/healthz", summary: "liveness and load", public: true, responses: { "200": { description: "ok", ...json("Health") } } },
  getOpenApi: {
    method: "get",
    path: "/openapi.json",
    summary: "this document",
    public: true,
    responses: { "200": { description: "OpenAPI 3.1 document", content: { "application/json": { schema: { type: "object", properties: { openapi: { type: "string" }, info: { type: "object" }, paths: { type: "object" } }, required: ["openapi", "info", "paths"] } } } } },
  },
  getMetrics: {
    method: "get",
    path: "/metrics",
    summary: "Prometheus metrics",
    responses: { "200": { description: "text exposition format", content: { "text/plain": { schema: { type: "string" } } } }, "401": common["401"] },
  },
  createSandbox: {
    method: "post",
    path: "/sandboxes",
    summary: "create a sandbox",
    description:
      "`network` (JavaScript/TypeScript sandboxes: `{allow, deny?, ...}`) is the operator's to grant: every `network.allow` entry must be within an entry of the API key's `allowNet` when the key has one, else of the server's `--allow-net` list (a `*.name` entry covers names under it; every scheme and port the asked entry covers must be covered). `network.deny` entries (same syntax; without a port they cover every port) win over `allow` and may be anything.",
    body: { kind: "json-resolved", schema: createSandboxRequest, required: true },
    responses: {
      "201": { description: "created", ...json("SandboxInfo") },
      ...jsonBody,
      "400": err("invalid body or options (error.issues), over this key's memory/run-time/cpu/disk quota, or a network.allow entry outside what this key may be granted (its allowNet, else --allow-net)"),
      "401": common["401"],
      "429": err("this key's sandbox quota is used up (QUOTA_EXCEEDED), or the server is at capacity (CAPACITY, after waiting in the queue)"),
      "501": err("tier/language not available in this build or on this host (TIER_UNAVAILABLE)"),
      "503": err("the server is shutting down (SHUTTING_DOWN); in cluster mode also: etcd is unreachable (CLUSTER_UNAVAILABLE), or no live node serves the tier (CAPACITY)"),
    },
  },
  listSandboxes: { method: "get", path: "/sandboxes", summary: "list this key's sandboxes", responses: { "200": { description: "ok", ...json("SandboxList") }, "401": common["401"] } },
  getSandbox: { method: "get", path: "/sandboxes/{id}", summary: "sandbox info", responses: { "200": { description: "ok", ...json("SandboxInfo") }, "401": common["401"], "404": common["404"] } },
  deleteSandbox: { method: "delete", path: "/sandboxes/{id}", summary: "kill the sandbox", responses: { "204": { description: "killed" }, "401": common["401"], "404": common["404"] } },
  pauseSandbox: {
    method: "post",
    path: "/sandboxes/{id}/pause",
    summary: "save the sandbox and end its process (memory freed); any later request resumes it",
    description:
      "Heavy tier: its memory, processes and files (a checkpoint); the sandbox gives its server slots back but still counts against the key's maxSandboxes, and is deleted after the server's --snapshot-ttl unless resumed. Idempotent. Also what the idle timeout does with idleAction \"pause\" (the default).",
    responses: { "200": { description: "paused", ...json("SandboxInfo") }, ...common, "400": err("background commands are running (INVALID_OPTIONS)"), "501": err("the sandbox's tier cannot be saved (TIER_UNAVAILABLE)") },
  },
  resumeSandbox: {
    method: "post",
    path: "/sandboxes/{id}/resume",
    summary: "bring a paused sandbox back (any request that uses it does the same); a no-op for a running one",
    responses: { "200": { description: "running", ...json("SandboxInfo") }, ...common, "429": err("the server is at capacity (CAPACITY, after waiting in the queue)") },
  },
  keepAlive: {
    method: "post",
    path: "/sandboxes/{id}/keepalive",
    summary: "restart the idle timer, optionally with a new idle timeout",
    body: jsonOf(keepAliveRequest, false),
    responses: { "200": { description: "ok", ...json("SandboxInfo") }, ...jsonBody, ...common },
  },
  runCode: {
    method: "post",
    path: "/sandboxes/{id}/run",
    summary: "run code (REPL semantics) and return the result",
    description: "Closing the connection before the answer interrupts the run.",
    body: jsonOf(runRequest),
    responses: {
      "200": { description: "the run's result; a guest exception or a limit the sandbox survived is in the result", ...json("RunResult") },
      ...jsonBody,
      "400": timeoutQuota,
      "409": replayFailed,
      "422": err("a limit killed the sandbox's worker (error.limit names it; the sandbox is closed)"),
      "501": err('a tier "auto" sandbox\'s cell needs the heavy tier, which cannot start on this host (TIER_UNAVAILABLE, saying why; the sandbox stays on the nano tier)'),
      ...common,
    },
  },
  runCodeStream: {
    method: "post",
    path: "/sandboxes/{id}/run/stream",
    summary: "run code, streaming output as Server-Sent Events",
    description: "Errors found before the run starts (body, quota, sandbox) are answered with their status; once the stream has started they come as its `error` event. Closing the connection interrupts the run.",
    body: jsonOf(runRequest),
    responses: { "200": eventStream("RunResult"), ...jsonBody, "400": timeoutQuota, ...common },
  },
  runCommand: {
    method: "post",
    path: "/sandboxes/{id}/commands",
    summary: "run a command in a heavy-tier sandbox (a tier \"auto\" one moves there first; bash -c for a string, argv for an array) and return its exit code and output",
    description:
      "Closing the connection before the answer kills the command. With `background: true` the answer (202) comes as soon as the command runs, with its pid; it then runs while other requests proceed, until it ends, is killed (POST .../commands/{pid}/kill) or the sandbox ends, and does not keep the sandbox from its idle timeout.",
    body: jsonOf(commandRequest),
    responses: {
      "200": { description: "the command's result, whatever its exit code; a timeout or output limit the sandbox survived is a result with limitHit (the command was killed)", ...json("CommandResult") },
      "202": { description: "background: true: the command runs; its pid names it in /sandboxes/{id}/commands/{pid}", ...json("CommandInfo") },
      ...jsonBody,
      "400": timeoutQuota,
      "409": replayFailed,
      "422": err("a limit killed the sandbox (e.g. its memory cgroup ran out: error.limit names it; the sandbox is closed)"),
      "501": notHeavy,
      ...common,
    },
  },
  runCommandStream: {
    method: "post",
    path: "/sandboxes/{id}/commands/stream",
    summary: "run a command in a heavy-tier sandbox (a tier \"auto\" one moves there first), streaming its output as Server-Sent Events",
    description: "Errors found before the command starts (body, quota, a nano-tier sandbox) are answered with their status; once the stream has started they come as its `error` event. Closing the connection kills the command.",
    body: jsonOf(commandRequest),
    responses: { "200": eventStream("CommandResult"), ...jsonBody, "400": err("invalid body (background: true belongs to POST /sandboxes/{id}/commands), or timeoutMs over this key's quota (maxRunMs)"), "501": notHeavy, ...common },
  },
  listCommands: {
    method: "get",
    path: "/sandboxes/{id}/commands",
    summary: "the background commands still running",
    responses: { "200": { description: "oldest first; empty once the sandbox is closed", ...json("CommandList") }, "401": common["401"], "404": common["404"] },
  },
  getCommand: {
    method: "get",
    path: "/sandboxes/{id}/commands/{pid}",
    summary: "a background command's state: running with its output so far, or its result",
    description: "Ended commands are remembered (the last 64 per sandbox) until the sandbox is deleted.",
    responses: { "200": { description: "ok", ...json("CommandStatus") }, "401": common["401"], "404": err("no such sandbox for this key, or no background command with this pid in it") },
  },
  waitCommand: {
    method: "get",
    path: "/sandboxes/{id}/commands/{pid}/wait",
    summary: "wait for a background command to end and return its result",
    description: "Closing the connection stops the wait, not the command.",
    responses: {
      "200": { description: "the command's result, as POST /sandboxes/{id}/commands answers it", ...json("CommandResult") },
      "401": common["401"],
      "404": err("no such sandbox for this key, or no background command with this pid in it"),
      "410": err("the sandbox ended before the command did (error.result: its output so far)"),
      "422": err("a limit killed the sandbox (error.limit names it; the sandbox is closed)"),
    },
  },
  killCommand: {
    method: "post",
    path: "/sandboxes/{id}/commands/{pid}/kill",
    summary: "signal a background command (SIGKILL by default, then wait for it to end)",
    body: jsonOf(killCommandRequest, false),
    responses: {
      "200": { description: "killed: false when it had already ended", ...json("Killed") },
      ...jsonBody,
      ...common,
      "404": err("no such sandbox for this key, or no background command with this pid in it"),
    },
  },
  downloadFile: {
    method: "get",
    path: "/sandboxes/{id}/files",
    summary: "download a file (bytes)",
    query: "path",
    responses: {
      "200": { description: "file contents", content: { "application/octet-stream": { schema: bytes } } },
      ...fsCommon,
      "403": err("permission denied (FS_ERROR, error.errno EACCES)"),
      "409": err("the path is a directory (FS_ERROR, error.errno EISDIR), or a parent is not one (ENOTDIR)"),
    },
  },
  uploadFile: {
    method: "put",
    path: "/sandboxes/{id}/files",
    summary: "upload a file (bytes; parent directories are created)",
    query: "path",
    body: { kind: "bytes" },
    responses: {
      "204": { description: "written" },
      ...fsCommon,
      "403": err("the path is read-only (FS_ERROR, error.errno EROFS/EACCES/EPERM): on the heavy tier only /home/user and /tmp are writable; read-only mounts"),
      "409": err("the path is a directory (EISDIR), or a parent is a file (ENOTDIR)"),
      "413": err("body over the upload limit (BODY_TOO_LARGE), or the sandbox's file system quota (FS_QUOTA, error.limit)"),
    },
  },
  removeFile: {
    method: "delete",
    path: "/sandboxes/{id}/files",
    summary: "remove a file or directory (recursively)",
    query: "path",
    responses: {
      "204": { description: "removed" },
      ...fsCommon,
      "403": err("the path is read-only (FS_ERROR, error.errno EROFS/EACCES/EPERM)"),
      "409": err("a parent is not a directory (ENOTDIR), or the directory could not be emptied (ENOTEMPTY)"),
    },
  },
  listFiles: {
    method: "get",
    path: "/sandboxes/{id}/files/list",
    summary: "list a directory",
    query: "path",
    responses: {
      "200": { description: "entries in code-point order", ...json("DirListing") },
      ...fsCommon,
      "403": err("permission denied (FS_ERROR, error.errno EACCES)"),
      "409": err("the path is not a directory (FS_ERROR, error.errno ENOTDIR)"),
    },
  },
  fileExists: {
    method: "get",
    path: "/sandboxes/{id}/files/exists",
    summary: "whether a path exists",
    query: "path",
    responses: { "200": { description: "ok", ...json("Exists") }, ...fsCommon, "404": common["404"] },
  },
  makeDir: {
    method: "post",
    path: "/sandboxes/{id}/files/mkdir",
    summary: "make a directory (and its parents)",
    query: "path",
    responses: {
      "204": { description: "made" },
      ...fsCommon,
      "403": err("the path is read-only (FS_ERROR, error.errno EROFS/EACCES/EPERM): on the heavy tier only /home/user and /tmp are writable"),
      "409": err("something that is not a directory is in the way (FS_ERROR, error.errno EEXIST or ENOTDIR)"),
      "413": err("the sandbox's file system quota (FS_QUOTA, error.limit vfsFiles)"),
    },
  },
  createSnapshot: {
    method: "post",
    path: "/sandboxes/{id}/snapshots",
    summary: "save the sandbox's whole state as a snapshot of this key (the sandbox runs on)",
    description:
      "Heavy tier: memory, processes and files (a gVisor checkpoint or a microVM migration). Tier auto: once it runs on the heavy tier. A snapshot belongs to the key that made it (another key gets 404), counts against its maxSnapshots, and is deleted after the server's snapshot TTL. Not while background commands run (400).",
    responses: {
      "201": { description: "saved", ...json("SnapshotInfo") },
      ...common,
      "400": err("background commands are running (INVALID_OPTIONS)"),
      "429": err("this key keeps its maxSnapshots already (QUOTA_EXCEEDED)"),
      "501": err("the sandbox's tier cannot be saved (TIER_UNAVAILABLE)"),
    },
  },
  listSnapshots: { method: "get", path: "/snapshots", summary: "this key's snapshots, oldest first", responses: { "200": { description: "ok", ...json("SnapshotList") }, "401": common["401"] } },
  deleteSnapshot: {
    method: "delete",
    path: "/snapshots/{snapshotId}",
    summary: "delete a snapshot and its saved state",
    responses: { "204": { description: "deleted" }, "401": common["401"], "404": err("no such snapshot for this key") },
  },
  restoreSnapshot: {
    method: "post",
    path: "/snapshots/{snapshotId}/restore",
    summary: "start a new sandbox from a snapshot (the snapshot stays, for more restores)",
    body: jsonOf(restoreRequest, false),
    responses: {
      "201": { description: "restored", ...json("SandboxInfo") },
      ...jsonBody,
      "401": common["401"],
      "404": err("no such snapshot for this key"),
      "429": err("this key's sandbox quota is used up (QUOTA_EXCEEDED), or the server is at capacity (CAPACITY)"),
    },
  },
  forkSandbox: {
    method: "post",
    path: "/sandboxes/{id}/fork",
    summary: "start `count` independent copies of the sandbox as it is now (it runs on)",
    description: "Each fork is a new sandbox of this key with the state of the original at the fork: variables, files, processes (heavy). Counts against maxSandboxes like creates; no snapshot is kept.",
    body: jsonOf(forkRequest),
    responses: {
      "201": { description: "forked", ...json("ForkResult") },
      ...jsonBody,
      ...common,
      "400": err("invalid body, or background commands are running"),
      "429": err("this key's sandbox quota is used up (QUOTA_EXCEEDED), or the server is at capacity (CAPACITY)"),
      "501": err("the sandbox's tier cannot be saved (TIER_UNAVAILABLE)"),
    },
  },
  getNetworkLog: {
    method: "get",
    path: "/sandboxes/{id}/network/log",
    summary: "the sandbox's network attempts, allowed or not (the last 1000, oldest first)",
    description:
      "One entry per request and per redirect hop of the guest's fetch: method, URL without query, host, port, the address connected to, the decision (allowed, denied, error) and its reason, status, bytes each way, duration. No headers or bodies. Empty for sandboxes without network. Also answered for a closed sandbox.",
    responses: { "200": { description: "ok", ...json("NetworkLog") }, "401": common["401"], "404": common["404"] },
  },
  exposePort: {
    method: "post",
    path: "/sandboxes/{id}/ports",
    summary: "expose a port of a heavy-tier sandbox through this server's reverse proxy",
    description:
      "Answers with the proxy URL of the port (`/sandboxes/{id}/ports/{port}/`); idempotent. Nothing needs to listen yet: requests to the URL answer 502 until something does. The proxy needs the same `Authorization: Bearer` header as every route (see proxyPort).",
    body: jsonOf(exposePortRequest),
    responses: { "201": { description: "exposed", ...json("ExposedPort") }, ...jsonBody, "501": err("the sandbox is nano-tier, or a tier \"auto\" one still on the nano tier (TIER_UNAVAILABLE)"), ...common },
  },
  listPorts: { method: "get", path: "/sandboxes/{id}/ports", summary: "the sandbox's exposed ports", responses: { "200": { description: "ok", ...json("PortList") }, "401": common["401"], "404": common["404"] } },
  closePort: {
    method: "delete",
    path: "/sandboxes/{id}/ports/{port}",
    summary: "stop proxying a port (open proxied connections are cut); idempotent",
    responses: { "204": { description: "closed" }, "400": err("port not an integer from 1 to 65535"), "401": common["401"], "404": common["404"] },
  },
  proxyPort: {
    method: "get",
    path: "/sandboxes/{id}/ports/{port}/{rest}",
    summary: "reverse proxy to an exposed port of the sandbox (any method; WebSocket upgrades too)",
    description:
      "Any method: the request goes to 127.0.0.1:{port} inside the sandbox with path `/{rest}` and the query, the body streamed unread, headers passed on except hop-by-hop ones, `Authorization` (the API key is never shown to the guest app), `Host` (set to 127.0.0.1:{port}) and `X-Forwarded-*` (set: `X-Forwarded-Host`, `-Proto`, `-Prefix` = `/sandboxes/{id}/ports/{port}`). The answer is streamed back as the guest app gives it. `Upgrade` requests (WebSocket) are authenticated the same way and then carry bytes both ways. Needs the `Authorization: Bearer` header: no cookie or query token (the guest's pages are served from this server's origin, so a cookie would hand them the API key's power).",
    proxy: true,
    responses: {
      "200": { description: "whatever the guest app answers (any status, headers, body)" },
      "400": err("port not an integer from 1 to 65535"),
      "401": common["401"],
      "404": err("no such sandbox for this key, or the port is not exposed (POST /sandboxes/{id}/ports)"),
      "410": common["410"],
      "501": notHeavy,
      "502": err("nothing listens on the port in the sandbox (PORT_UNREACHABLE, error.port), or the guest app closed the connection without an answer (BAD_GATEWAY)"),
    },
  },
} as const satisfies Record<string, RouteSpec>;

export type OperationId = keyof typeof ROUTES;

/** The Hono form of an OpenAPI path: `/sandboxes/{id}` → `/sandboxes/:id`. */
export const honoPath = (p: string) => p.replace(/\{(\w+)\}/g, ":$1");

/** Whether the route acts on one of the caller's sandboxes. */
export const hasSandboxId = (p: string) => p.includes("{id}");

const idParam = { name: "id", in: "path", required: true, description: "the sandbox id from POST /sandboxes", schema: { type: "string" } };
const snapshotParam = { name: "snapshotId", in: "path", required: true, description: "a snapshot of this key (POST /sandboxes/{id}/snapshots)", schema: { type: "string" } };
const pidParam = { name: "pid", in: "path", required: true, description: "a background command's pid in the guest (POST /sandboxes/{id}/commands with background: true)", schema: { type: "integer", minimum: 1 } };
const portParam = { name: "port", in: "path", required: true, description: "a TCP port in the sandbox", schema: { type: "integer", minimum: 1, maximum: 65535 } };
const restParam = { name: "rest", in: "path", required: true, description: "the rest of the path (any number of segments, may be empty), sent to the guest app", schema: { type: "string" } };
const pathParam = { name: "path", in: "query", required: true, description: "absolute guest path; `..` segments are refused (400)", schema: { type: "string", minLength: 1 } };

/**
 * Request bodies, written inline into each operation's requestBody from the parsing schema's
 * input side: a field with a default is optional there. (openapi-typescript, with its default
 * defaultNonNullable, makes a property with a `default` required unless it sits under a
 * requestBody: as a shared component, `limits.memoryMb` alone would not type-check.)
 */
function requestBody(b: BodySpec) {
  if (b.kind === "bytes") return { required: true, content: { "application/octet-stream": { schema: bytes } } };
  const { $schema: _drop, ...s } = z.toJSONSchema(b.schema, { io: "input", target: "draft-2020-12" });
  return { required: b.required, content: { "application/json": { schema: s } } };
}

/** The OpenAPI `paths` object: one path item per path, its parameters shared by its operations. */
function paths(): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [operationId, r] of Object.entries(ROUTES) as [OperationId, RouteSpec][]) {
    const parameters = [...(hasSandboxId(r.path) ? [idParam] : []), ...(r.path.includes("{pid}") ? [pidParam] : []), ...(r.path.includes("{snapshotId}") ? [snapshotParam] : []), ...(r.path.includes("{port}") ? [portParam] : []), ...(r.path.includes("{rest}") ? [restParam] : []), ...(r.query === "path" ? [pathParam] : [])];
    let item = out[r.path];
    if (!item) item = out[r.path] = parameters.length > 0 ? { parameters } : {};
    else if (JSON.stringify(item.parameters ?? []) !== JSON.stringify(parameters)) throw new Error(`routes: ${r.method} ${r.path} takes other parameters than its path's other operations`);
    item[r.method] = {
      operationId,
      summary: r.summary,
      ...(r.description !== undefined ? { description: r.description } : {}),
      ...(r.public ? { security: [] } : {}),
      ...(r.body ? { requestBody: requestBody(r.body) } : {}),
      responses: r.responses,
    };
  }
  return out;
}

/**
 * The OpenAPI 3.1 document of the HTTP API. `redocly lint` passes it with two warnings left on
 * purpose (operation-4xx-response on /healthz and /openapi.json: unauthenticated and without
 * input, they answer nothing but 200); test/integration/openapi.test.ts pins that list.
 */
export function openApiDocument(version: string): Record<string, unknown> {
  const reg = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(responseSchemas)) reg.add(schema, { id });
  const { schemas } = z.toJSONSchema(reg, { io: "output", target: "draft-2020-12", uri: (id) => `#/components/schemas/${id}` });
  const components: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(schemas)) {
    const { $schema: _s, $id: _i, ...rest } = schema as Record<string, unknown>;
    components[name] = rest;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "agentbox",
      version,
      description: "Run untrusted code in sandboxes. Every route except /healthz and /openapi.json needs `Authorization: Bearer <key>` when the server has keys.",
      license: { name: "Apache-2.0", identifier: "Apache-2.0" },
    },
    servers: [{ url: "http://127.0.0.1:8787", description: "`agentbox serve` with its default --host and --port" }],
    components: { schemas: components, securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    security: [{ bearer: [] }],
    paths: paths(),
  };
}
