// Request and response schemas of the HTTP API, and the OpenAPI 3.1 document generated from them.
// Request bodies are parsed by these very schemas (built on the library's own option schemas),
// so the document cannot drift from what the server accepts.
import { z } from "zod";
import { commandOptionsSchema, runOptionsSchema, sandboxOptionsSchema } from "../policy/options.js";
import { dirEntrySchema, guestErrorSchema, LIMIT_NAMES } from "../protocol/messages.js";

const idleTimeoutMs = z.int().min(1000).max(24 * 3600 * 1000);

/** POST /sandboxes. The library's options minus `pool` (the server decides), plus the idle timeout. */
export const createSandboxRequest = sandboxOptionsSchema.omit({ pool: true }).extend({
  /** The sandbox is killed after this long without a request touching it. */
  idleTimeoutMs: idleTimeoutMs.default(300_000),
});

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
  tier: sandboxOptionsSchema.shape.tier,
  language: sandboxOptionsSchema.shape.language,
  limits: sandboxOptionsSchema.shape.limits.unwrap(),
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
    code: z.string(),
    name: z.string(),
    message: z.string(),
    issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    limit: z.string().optional(),
    value: z.number().optional(),
    errno: z.string().optional(),
    sandboxClosed: z.boolean().optional(),
    result: z
      .object({ stdout: z.string(), stderr: z.string(), exitCode: z.int(), limitHit: z.enum(LIMIT_NAMES).optional() })
      .optional()
      .describe("the output so far of the run or command this error stopped (it was killed), when it stopped one"),
  }),
});

const schemas = {
  CreateSandboxRequest: [createSandboxRequest, "input"],
  KeepAliveRequest: [keepAliveRequest, "input"],
  RunRequest: [runRequest, "input"],
  SandboxInfo: [sandboxInfo, "output"],
  SandboxList: [z.strictObject({ sandboxes: z.array(sandboxInfo) }), "output"],
  RunResult: [runResult, "output"],
  CommandRequest: [commandRequest, "input"],
  CommandResult: [commandResult, "output"],
  DirEntry: [dirEntrySchema, "output"],
  DirListing: [z.strictObject({ entries: z.array(dirEntrySchema) }), "output"],
  Exists: [z.strictObject({ exists: z.boolean() }), "output"],
  Error: [errorBody, "output"],
} as const;

const ref = (name: keyof typeof schemas) => ({ $ref: `#/components/schemas/${name}` });
const json = (name: keyof typeof schemas) => ({ content: { "application/json": { schema: ref(name) } } });
const err = (description: string) => ({ description, ...json("Error") });
const idParam = { name: "id", in: "path", required: true, schema: { type: "string" } };
const pathParam = { name: "path", in: "query", required: true, description: "absolute guest path; `..` segments are refused", schema: { type: "string" } };
const common = { "401": err("missing or unknown API key"), "404": err("no such sandbox for this key"), "410": err("the sandbox is closed") };

export function openApiDocument(version: string): Record<string, unknown> {
  const components: Record<string, unknown> = {};
  for (const [name, [schema, io]] of Object.entries(schemas)) {
    const { $schema: _drop, ...s } = z.toJSONSchema(schema, { io, target: "draft-2020-12" });
    components[name] = s;
  }
  const sb = [idParam];
  return {
    openapi: "3.1.0",
    info: {
      title: "agentbox",
      version,
      description: "Run untrusted code in sandboxes. Every route except /healthz and /openapi.json needs `Authorization: Bearer <key>` when the server has keys.",
    },
    components: { schemas: components, securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    security: [{ bearer: [] }],
    paths: {
      "/healthz": { get: { summary: "liveness", security: [], responses: { "200": { description: "ok", content: { "application/json": { schema: { type: "object" } } } } } } },
      "/openapi.json": { get: { summary: "this document", security: [], responses: { "200": { description: "OpenAPI 3.1 document" } } } },
      "/metrics": { get: { summary: "Prometheus metrics", responses: { "200": { description: "text exposition format", content: { "text/plain": { schema: { type: "string" } } } }, "401": common["401"] } } },
      "/sandboxes": {
        post: {
          summary: "create a sandbox",
          requestBody: { required: true, ...json("CreateSandboxRequest") },
          responses: {
            "201": { description: "created", ...json("SandboxInfo") },
            "400": err("invalid options, or over this key's memory/run-time quota"),
            "401": common["401"],
            "413": err("body too large"),
            "429": err("this key's sandbox quota is used up (QUOTA_EXCEEDED), or the server is at capacity (CAPACITY, after waiting in the queue)"),
            "501": err("tier/language not available in this build"),
          },
        },
        get: { summary: "list this key's sandboxes", responses: { "200": { description: "ok", ...json("SandboxList") }, "401": common["401"] } },
      },
      "/sandboxes/{id}": {
        parameters: sb,
        get: { summary: "sandbox info", responses: { "200": { description: "ok", ...json("SandboxInfo") }, "401": common["401"], "404": common["404"] } },
        delete: { summary: "kill the sandbox", responses: { "204": { description: "killed" }, "401": common["401"], "404": common["404"] } },
      },
      "/sandboxes/{id}/keepalive": {
        parameters: sb,
        post: {
          summary: "restart the idle timer, optionally with a new idle timeout",
          requestBody: { required: false, ...json("KeepAliveRequest") },
          responses: { "200": { description: "ok", ...json("SandboxInfo") }, "400": err("invalid body"), ...common },
        },
      },
      "/sandboxes/{id}/run": {
        parameters: sb,
        post: {
          summary: "run code (REPL semantics) and return the result",
          requestBody: { required: true, ...json("RunRequest") },
          responses: {
            "200": { description: "the run's result; a guest exception or a limit the sandbox survived is in the result", ...json("RunResult") },
            "400": err("invalid body, or timeoutMs over this key's quota"),
            "422": err("a limit killed the sandbox's worker (error.limit names it; the sandbox is closed)"),
            ...common,
          },
        },
      },
      "/sandboxes/{id}/run/stream": {
        parameters: sb,
        post: {
          summary: "run code, streaming output as Server-Sent Events",
          description: "Events: `stdout` and `stderr` (data: a JSON string, one chunk as the guest wrote it), then exactly one of `result` (data: RunResult JSON) or `error` (data: Error JSON). Closing the connection interrupts the run.",
          requestBody: { required: true, ...json("RunRequest") },
          responses: { "200": { description: "event stream", content: { "text/event-stream": { schema: { type: "string" } } } }, "400": err("invalid body"), ...common },
        },
      },
      "/sandboxes/{id}/commands": {
        parameters: sb,
        post: {
          summary: "run a command in a heavy-tier sandbox (bash -c for a string, argv for an array) and return its exit code and output",
          requestBody: { required: true, ...json("CommandRequest") },
          responses: {
            "200": { description: "the command's result, whatever its exit code; a timeout or output limit the sandbox survived is a result with limitHit (the command was killed)", ...json("CommandResult") },
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
          summary: "run a command in a heavy-tier sandbox, streaming its output as Server-Sent Events",
          description: "Events: `stdout` and `stderr` (data: a JSON string, one chunk as the command wrote it), then exactly one of `result` (data: CommandResult JSON) or `error` (data: Error JSON with `status`). Closing the connection kills the command.",
          requestBody: { required: true, ...json("CommandRequest") },
          responses: { "200": { description: "event stream", content: { "text/event-stream": { schema: { type: "string" } } } }, "400": err("invalid body"), ...common },
        },
      },
      "/sandboxes/{id}/files": {
        parameters: [idParam, pathParam],
        get: { summary: "download a file (bytes)", responses: { "200": { description: "file contents", content: { "application/octet-stream": { schema: { type: "string", contentMediaType: "application/octet-stream" } } } }, ...common } },
        put: {
          summary: "upload a file (bytes; parent directories are created)",
          requestBody: { required: true, content: { "application/octet-stream": { schema: { type: "string", contentMediaType: "application/octet-stream" } } } },
          responses: { "204": { description: "written" }, "400": err("bad path"), "413": err("body too large, or the sandbox's file system quota (error.limit)"), ...common },
        },
        delete: { summary: "remove a file or directory (recursively)", responses: { "204": { description: "removed" }, ...common } },
      },
      "/sandboxes/{id}/files/list": { parameters: [idParam, pathParam], get: { summary: "list a directory", responses: { "200": { description: "entries in code-point order", ...json("DirListing") }, ...common } } },
      "/sandboxes/{id}/files/exists": { parameters: [idParam, pathParam], get: { summary: "whether a path exists", responses: { "200": { description: "ok", ...json("Exists") }, ...common } } },
      "/sandboxes/{id}/files/mkdir": { parameters: [idParam, pathParam], post: { summary: "make a directory (and its parents)", responses: { "204": { description: "made" }, ...common } } },
    },
  };
}
