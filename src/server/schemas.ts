// Request and response schemas of the HTTP API, and the OpenAPI 3.1 document generated from them.
// Request bodies are parsed by these very schemas (built on the library's own option schemas),
// so the document cannot drift from what the server accepts.
import { z } from "zod";
import { optionSchemas } from "../engines/registry.js";
import { commandOptionsSchema, heavyLimitsSchema, nanoLimitsSchema, runOptionsSchema, TIERS } from "../policy/options.js";
import { dirEntrySchema, guestErrorSchema, LIMIT_NAMES } from "../protocol/messages.js";

const idleTimeoutMs = z.int().min(1000).max(24 * 3600 * 1000);

/** The create request's own fields, beside the library's sandbox options. */
export const createSandboxExtras = z.object({
  /** The sandbox is killed after this long without a request touching it. */
  idleTimeoutMs: idleTimeoutMs.default(300_000),
});

/** POST /sandboxes: the library's options of either tier minus `pool` (the server decides), plus
 *  the idle timeout. Documents the body; the route parses it with resolveSandboxOptions. */
export const createSandboxRequest = z.union([
  optionSchemas.nano.omit({ pool: true }).extend({ tier: optionSchemas.nano.shape.tier.optional(), ...createSandboxExtras.shape }),
  optionSchemas.heavy.omit({ pool: true }).extend(createSandboxExtras.shape),
]);

export const keepAliveRequest = z.strictObject({
  /** New idle timeout; omitted: keep the current one. Either way the timer restarts. */
  idleTimeoutMs: idleTimeoutMs.optional(),
});

export const runRequest = z.strictObject({
  code: z.string(),
  timeoutMs: runOptionsSchema.shape.timeoutMs,
});

/** POST /sandboxes/{id}/commands: `commands.run` of a heavy-tier sandbox over JSON. */
export const commandRequest = z
  .strictObject({
    /** A string runs with `/bin/bash -c`; an array is the argv itself. */
    cmd: z.union([z.string().min(1), z.array(z.string()).min(1)]).refine((c) => !(Array.isArray(c) ? c : [c]).some((a) => a.includes("\0")), "must not contain NUL"),
    /** Kill the command after this long (default: the sandbox's limits.timeoutMs). */
    timeoutMs: commandOptionsSchema.shape.timeoutMs,
    cwd: commandOptionsSchema.shape.cwd,
    env: commandOptionsSchema.shape.env,
    /** Standard input as UTF-8 text ... */
    stdin: z.string().optional(),
    /** ... or as base64 bytes (binary-safe); not both. */
    stdinBase64: z.base64().optional(),
  })
  .refine((r) => r.stdin === undefined || r.stdinBase64 === undefined, { message: "give stdin or stdinBase64, not both", path: ["stdinBase64"] });

export const commandResult = z.strictObject({
  /** The command's exit status; 128 + N when signal N ended it (a limit kills with SIGKILL: 137). */
  exitCode: z.int(),
  stdout: z.string(),
  stderr: z.string(),
  /** Name of the signal that ended the command, e.g. "SIGKILL". */
  signal: z.string().optional(),
  durationMs: z.number(),
  /** Set when a limit stopped the command and the sandbox lived on: the output is what came before. */
  limitHit: z.enum(LIMIT_NAMES).optional(),
});

export type CommandRequest = z.output<typeof commandRequest>;
export type CommandResultBody = z.output<typeof commandResult>;

export const sandboxInfo = z.strictObject({
  id: z.string(),
  tier: z.enum(TIERS),
  language: z.union([optionSchemas.nano.shape.language.unwrap(), optionSchemas.heavy.shape.language.unwrap()]),
  limits: z.union([nanoLimitsSchema.unwrap(), heavyLimitsSchema.unwrap()]),
  seed: z.int(),
  status: z.enum(["running", "closed"]),
  createdAt: z.iso.datetime(),
  lastActiveAt: z.iso.datetime(),
  idleTimeoutMs: z.int(),
  expiresAt: z.iso.datetime(),
});

export const runResult = z.strictObject({
  stdout: z.string(),
  stderr: z.string(),
  value: z.string().optional(),
  error: guestErrorSchema.optional(),
  exitCode: z.union([z.literal(0), z.literal(1)]),
  durationMs: z.number(),
  limitHit: z.enum(LIMIT_NAMES).optional(),
  vfsDigest: z.string(),
  seed: z.int(),
});

export const errorBody = z.object({
  error: z.object({
    /** Stable code: the library's (TIMEOUT, FS_ERROR, ...) or the server's (UNAUTHORIZED, BODY_TOO_LARGE, ...). */
    code: z.string(),
    name: z.string(),
    message: z.string(),
    /** INVALID_OPTIONS: every bad field by dotted path. */
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    /** Limit errors: the option that was hit (e.g. "memoryMb") and its value. */
    limit: z.string().optional(),
    value: z.number().optional(),
    /** QUOTA_EXCEEDED: the key's quota that is used up (e.g. "maxSandboxes"). */
    quota: z.string().optional(),
    /** FS_ERROR: the errno, e.g. ENOENT, EISDIR, EROFS. */
    errno: z.string().optional(),
    /** Set when the error closed the sandbox (a limit killed its worker, or the worker died). */
    sandboxClosed: z.boolean().optional(),
    result: z
      .object({ stdout: z.string(), stderr: z.string(), exitCode: z.int(), limitHit: z.enum(LIMIT_NAMES).optional() })
      .optional()
      .describe("the output so far of the run or command this error stopped (it was killed), when it stopped one"),
  }),
  /** Only in a stream's `error` event: the HTTP status the non-streaming route would have answered. */
  status: z.int().min(400).max(599).optional(),
});

export const health = z.strictObject({
  status: z.literal("ok"),
  /** Live sandboxes, of which heavy-tier ones; creates waiting for a slot. */
  sandboxes: z.int(),
  heavySandboxes: z.int(),
  queued: z.int(),
});

/** Response bodies: named components (a schema used inside another becomes a $ref to it). */
const responseSchemas = {
  SandboxInfo: sandboxInfo,
  SandboxList: z.strictObject({ sandboxes: z.array(sandboxInfo) }),
  RunResult: runResult,
  CommandResult: commandResult,
  DirEntry: dirEntrySchema,
  DirListing: z.strictObject({ entries: z.array(dirEntrySchema) }),
  Exists: z.strictObject({ exists: z.boolean() }),
  Health: health,
  Error: errorBody,
} as const;

/**
 * Request bodies, written inline into each operation's requestBody from the parsing schema's
 * input side: a field with a default is optional there. (openapi-typescript, with its default
 * defaultNonNullable, makes a property with a `default` required unless it sits under a
 * requestBody: as a shared component, `limits.memoryMb` alone would not type-check.)
 */
function requestBody(schema: z.ZodType, required = true) {
  const { $schema: _drop, ...s } = z.toJSONSchema(schema, { io: "input", target: "draft-2020-12" });
  return { required, content: { "application/json": { schema: s } } };
}

type Name = keyof typeof responseSchemas;
const ref = (name: Name) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: Name) => ({ content: { "application/json": { schema: ref(name) } } });
const err = (description: string) => ({ description, ...json("Error") });
const bytes = { type: "string", format: "binary", contentMediaType: "application/octet-stream" };
const idParam = { name: "id", in: "path", required: true, description: "the sandbox id from POST /sandboxes", schema: { type: "string" } };
const pathParam = { name: "path", in: "query", required: true, description: "absolute guest path; `..` segments are refused (400)", schema: { type: "string", minLength: 1 } };
const common = { "401": err("missing or unknown API key"), "404": err("no such sandbox for this key"), "410": err("the sandbox is closed (a limit killed it, or its worker died)") };
const jsonBody = {
  "400": err("invalid body (INVALID_JSON, or INVALID_OPTIONS with error.issues naming each field)"),
  "413": err("request body over the server's limit (4 MiB by default; BODY_TOO_LARGE)"),
};
const fsCommon = {
  ...common,
  "400": err("missing or invalid ?path= (not absolute, a `..` segment, NUL)"),
  "404": err("no such sandbox for this key, or no such file (FS_ERROR, error.errno ENOENT)"),
};
const eventStream = (result: "RunResult" | "CommandResult") => ({
  description:
    `event stream: \`stdout\` and \`stderr\` events (data: a JSON string, one chunk as it was written), then exactly one \`result\` (data: ${result} JSON) ` +
    "or `error` (data: Error JSON with `status`, the status the non-streaming route would have answered)",
  content: {
    "text/event-stream": {
      schema: { type: "string" },
      // OpenAPI 3.1 cannot type the events of a stream (3.2's itemSchema can): named here for readers and generators.
      "x-events": { stdout: { type: "string" }, stderr: { type: "string" }, result: ref(result), error: ref("Error") },
    },
  },
});

/**
 * The OpenAPI 3.1 document of the HTTP API. `redocly lint` passes it with two warnings left on
 * purpose (operation-4xx-response on /healthz and /openapi.json: unauthenticated and without
 * input, they answer nothing but 200); test/integration/openapi.test.ts pins that list.
 */
export function openApiDocument(version: string): Record<string, unknown> {
  const { schemas } = z.toJSONSchema(registryOf(responseSchemas), { io: "output", target: "draft-2020-12", uri: (id) => `#/components/schemas/${id}` });
  const components: Record<string, unknown> = {};
  for (const [name, schema] of Object.entries(schemas)) {
    const { $schema: _s, $id: _i, ...rest } = schema as Record<string, unknown>;
    components[name] = rest;
  }
  const sb = [idParam];
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
    paths: {
      "/healthz": { get: { operationId: "getHealth", summary: "liveness and load", security: [], responses: { "200": { description: "ok", ...json("Health") } } } },
      "/openapi.json": {
        get: {
          operationId: "getOpenApi",
          summary: "this document",
          security: [],
          responses: { "200": { description: "OpenAPI 3.1 document", content: { "application/json": { schema: { type: "object", properties: { openapi: { type: "string" }, info: { type: "object" }, paths: { type: "object" } }, required: ["openapi", "info", "paths"] } } } } },
        },
      },
      "/metrics": {
        get: {
          operationId: "getMetrics",
          summary: "Prometheus metrics",
          responses: { "200": { description: "text exposition format", content: { "text/plain": { schema: { type: "string" } } } }, "401": common["401"] },
        },
      },
      "/sandboxes": {
        post: {
          operationId: "createSandbox",
          summary: "create a sandbox",
          requestBody: requestBody(createSandboxRequest),
          responses: {
            "201": { description: "created", ...json("SandboxInfo") },
            ...jsonBody,
            "400": err("invalid body or options (error.issues), or over this key's memory/run-time/cpu/disk quota"),
            "401": common["401"],
            "429": err("this key's sandbox quota is used up (QUOTA_EXCEEDED), or the server is at capacity (CAPACITY, after waiting in the queue)"),
            "501": err("tier/language not available in this build or on this host (TIER_UNAVAILABLE)"),
            "503": err("the server is shutting down"),
          },
        },
        get: { operationId: "listSandboxes", summary: "list this key's sandboxes", responses: { "200": { description: "ok", ...json("SandboxList") }, "401": common["401"] } },
      },
      "/sandboxes/{id}": {
        parameters: sb,
        get: { operationId: "getSandbox", summary: "sandbox info", responses: { "200": { description: "ok", ...json("SandboxInfo") }, "401": common["401"], "404": common["404"] } },
        delete: { operationId: "deleteSandbox", summary: "kill the sandbox", responses: { "204": { description: "killed" }, "401": common["401"], "404": common["404"] } },
      },
      "/sandboxes/{id}/keepalive": {
        parameters: sb,
        post: {
          operationId: "keepAlive",
          summary: "restart the idle timer, optionally with a new idle timeout",
          requestBody: requestBody(keepAliveRequest, false),
          responses: { "200": { description: "ok", ...json("SandboxInfo") }, ...jsonBody, ...common },
        },
      },
      "/sandboxes/{id}/run": {
        parameters: sb,
        post: {
          operationId: "runCode",
          summary: "run code (REPL semantics) and return the result",
          description: "Closing the connection before the answer interrupts the run.",
          requestBody: requestBody(runRequest),
          responses: {
            "200": { description: "the run's result; a guest exception or a limit the sandbox survived is in the result", ...json("RunResult") },
            ...jsonBody,
            "400": err("invalid body, or timeoutMs over this key's quota (maxRunMs)"),
            "422": err("a limit killed the sandbox's worker (error.limit names it; the sandbox is closed)"),
            ...common,
          },
        },
      },
      "/sandboxes/{id}/run/stream": {
        parameters: sb,
        post: {
          operationId: "runCodeStream",
          summary: "run code, streaming output as Server-Sent Events",
          description: "Errors found before the run starts (body, quota, sandbox) are answered with their status; once the stream has started they come as its `error` event. Closing the connection interrupts the run.",
          requestBody: requestBody(runRequest),
          responses: { "200": eventStream("RunResult"), ...jsonBody, "400": err("invalid body, or timeoutMs over this key's quota (maxRunMs)"), ...common },
        },
      },
      "/sandboxes/{id}/commands": {
        parameters: sb,
        post: {
          operationId: "runCommand",
          summary: "run a command in a heavy-tier sandbox (bash -c for a string, argv for an array) and return its exit code and output",
          description: "Closing the connection before the answer kills the command.",
          requestBody: requestBody(commandRequest),
          responses: {
            "200": { description: "the command's result, whatever its exit code; a timeout or output limit the sandbox survived is a result with limitHit (the command was killed)", ...json("CommandResult") },
            ...jsonBody,
            "400": err("invalid body, or timeoutMs over this key's quota (maxRunMs)"),
            "422": err("a limit killed the sandbox (e.g. its memory cgroup ran out: error.limit names it; the sandbox is closed)"),
            "501": err("the sandbox is not heavy-tier (create it with \"tier\": \"heavy\")"),
            ...common,
          },
        },
      },
      "/sandboxes/{id}/commands/stream": {
        parameters: sb,
        post: {
          operationId: "runCommandStream",
          summary: "run a command in a heavy-tier sandbox, streaming its output as Server-Sent Events",
          description: "Errors found before the command starts (body, quota, a nano-tier sandbox) are answered with their status; once the stream has started they come as its `error` event. Closing the connection kills the command.",
          requestBody: requestBody(commandRequest),
          responses: {
            "200": eventStream("CommandResult"),
            ...jsonBody,
            "400": err("invalid body, or timeoutMs over this key's quota (maxRunMs)"),
            "501": err("the sandbox is not heavy-tier (create it with \"tier\": \"heavy\")"),
            ...common,
          },
        },
      },
      "/sandboxes/{id}/files": {
        parameters: [idParam, pathParam],
        get: {
          operationId: "downloadFile",
          summary: "download a file (bytes)",
          responses: {
            "200": { description: "file contents", content: { "application/octet-stream": { schema: bytes } } },
            ...fsCommon,
            "403": err("permission denied (FS_ERROR, error.errno EACCES)"),
            "409": err("the path is a directory (FS_ERROR, error.errno EISDIR), or a parent is not one (ENOTDIR)"),
          },
        },
        put: {
          operationId: "uploadFile",
          summary: "upload a file (bytes; parent directories are created)",
          requestBody: { required: true, content: { "application/octet-stream": { schema: bytes } } },
          responses: {
            "204": { description: "written" },
            ...fsCommon,
            "403": err("the path is read-only (FS_ERROR, error.errno EROFS/EACCES/EPERM): on the heavy tier only /home/user and /tmp are writable; read-only mounts"),
            "409": err("the path is a directory (EISDIR), or a parent is a file (ENOTDIR)"),
            "413": err("body over the upload limit (BODY_TOO_LARGE), or the sandbox's file system quota (FS_QUOTA, error.limit)"),
          },
        },
        delete: {
          operationId: "removeFile",
          summary: "remove a file or directory (recursively)",
          responses: {
            "204": { description: "removed" },
            ...fsCommon,
            "403": err("the path is read-only (FS_ERROR, error.errno EROFS/EACCES/EPERM)"),
            "409": err("a parent is not a directory (ENOTDIR), or the directory could not be emptied (ENOTEMPTY)"),
          },
        },
      },
      "/sandboxes/{id}/files/list": {
        parameters: [idParam, pathParam],
        get: {
          operationId: "listFiles",
          summary: "list a directory",
          responses: {
            "200": { description: "entries in code-point order", ...json("DirListing") },
            ...fsCommon,
            "403": err("permission denied (FS_ERROR, error.errno EACCES)"),
            "409": err("the path is not a directory (FS_ERROR, error.errno ENOTDIR)"),
          },
        },
      },
      "/sandboxes/{id}/files/exists": {
        parameters: [idParam, pathParam],
        get: { operationId: "fileExists", summary: "whether a path exists", responses: { "200": { description: "ok", ...json("Exists") }, ...fsCommon, "404": common["404"] } },
      },
      "/sandboxes/{id}/files/mkdir": {
        parameters: [idParam, pathParam],
        post: {
          operationId: "makeDir",
          summary: "make a directory (and its parents)",
          responses: {
            "204": { description: "made" },
            ...fsCommon,
            "403": err("the path is read-only (FS_ERROR, error.errno EROFS/EACCES/EPERM): on the heavy tier only /home/user and /tmp are writable"),
            "409": err("something that is not a directory is in the way (FS_ERROR, error.errno EEXIST or ENOTDIR)"),
            "413": err("the sandbox's file system quota (FS_QUOTA, error.limit vfsFiles)"),
          },
        },
      },
    },
  };
}

function registryOf(named: Record<string, z.ZodType>) {
  const reg = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(named)) reg.add(schema, { id });
  return reg;
}
