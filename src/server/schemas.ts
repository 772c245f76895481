// Request and response schemas of the HTTP API. Request bodies are parsed by these very schemas
// (built on the library's own option schemas), and routes.ts generates the OpenAPI document from
// them, so the document cannot drift from what the server accepts.
import { z } from "zod";
import { LANGUAGES, optionSchemas } from "../engines/registry.js";
import { autoLimitsSchema, commandOptionsSchema, heavyLimitsSchema, nanoLimitsSchema, runOptionsSchema, TIERS } from "../policy/options.js";
import { networkLogEntrySchema } from "../policy/network.js";
import { dirEntrySchema, displayResultSchema, guestErrorSchema, LIMIT_NAMES } from "../protocol/messages.js";

const idleTimeoutMs = z.int().min(1000).max(24 * 3600 * 1000);

/** The create request's own fields, beside the library's sandbox options. */
export const createSandboxExtras = z.object({
  /** After this long without a request touching it, the sandbox is paused (or killed: idleAction). */
  idleTimeoutMs: idleTimeoutMs.default(300_000),
  /**
   * "pause" (default): saved and its process ended; the next request to it resumes it (a tier that
   * cannot be saved is killed instead). "kill": deleted.
   */
  idleAction: z.enum(["pause", "kill"]).default("pause"),
});

/** POST /sandboxes: the library's options of any tier minus `pool` (the server decides), plus
 *  the idle timeout. Documents the body; the route parses it with resolveSandboxOptions. */
export const createSandboxRequest = z.union([
  optionSchemas.nano.omit({ pool: true }).extend({ tier: optionSchemas.nano.shape.tier.optional(), ...createSandboxExtras.shape }),
  optionSchemas.heavy.omit({ pool: true }).extend(createSandboxExtras.shape),
  optionSchemas.auto.omit({ pool: true }).extend(createSandboxExtras.shape),
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
    /**
     * Start the command and answer 202 with its pid as soon as it runs; it has no time limit
     * unless timeoutMs is given, and the connection closing does not kill it. See
     * /sandboxes/{id}/commands/{pid}.
     */
    background: z.boolean().optional(),
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

/** A background command, as listed. */
export const commandInfo = z.strictObject({
  /** Its process id in the guest: the {pid} of its routes. */
  pid: z.int(),
  /** The command as given (an argv joined by spaces). */
  cmd: z.string(),
  argv: z.array(z.string()),
  cwd: z.string(),
  startedAt: z.iso.datetime(),
});

/** A background command's state: running (output so far), exited (its result) or failed (the sandbox ended under it). */
export const commandStatus = commandInfo.extend({
  status: z.enum(["running", "exited", "failed"]),
  stdout: z.string(),
  stderr: z.string(),
  exitCode: z.int().optional(),
  signal: z.string().optional(),
  durationMs: z.number().optional(),
  limitHit: z.enum(LIMIT_NAMES).optional(),
  /** status "failed": why (the error that ended the sandbox). */
  error: z.string().optional(),
});

/** POST /sandboxes/{id}/commands/{pid}/kill. */
export const killCommandRequest = z.strictObject({
  /** The signal sent to the command's process group; KILL (the default) also waits for it to end. */
  signal: z.enum(["KILL", "TERM", "INT"]).default("KILL"),
});

export type CommandRequest = z.output<typeof commandRequest>;
export type CommandResultBody = z.output<typeof commandResult>;

/** The tier that ran a run, or that runs a tier "auto" sandbox now. */
const runningTier = z.enum(["nano", "heavy"]);

export const sandboxInfo = z.strictObject({
  id: z.string(),
  tier: z.enum(TIERS),
  /** Tier "auto" only: the tier it runs on now (it moves to "heavy" when a cell needs it). */
  current: runningTier.optional(),
  language: z.enum(LANGUAGES),
  limits: z.union([nanoLimitsSchema.unwrap(), heavyLimitsSchema.unwrap(), autoLimitsSchema.unwrap()]),
  seed: z.int(),
  /** paused: saved, no process; a request that uses it (or POST /resume) brings it back. */
  status: z.enum(["running", "paused", "closed"]),
  idleAction: z.enum(["pause", "kill"]),
  createdAt: z.iso.datetime(),
  lastActiveAt: z.iso.datetime(),
  idleTimeoutMs: z.int(),
  expiresAt: z.iso.datetime(),
  /** Cluster mode only: the node that holds the sandbox (any node answers for it). */
  node: z.string().optional(),
});

export const runResult = z.strictObject({
  stdout: z.string(),
  stderr: z.string(),
  value: z.string().optional(),
  /** Rich results (display() calls, the final expression's bundle), when there are any. */
  results: z.array(displayResultSchema).optional(),
  error: guestErrorSchema.optional(),
  exitCode: z.union([z.literal(0), z.literal(1)]),
  durationMs: z.number(),
  limitHit: z.enum(LIMIT_NAMES).optional(),
  vfsDigest: z.string(),
  seed: z.int(),
  /** The tier that ran it (for tier "auto", the one the sandbox was on then). */
  tier: runningTier,
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
    /** REPLAY_FAILED: the runCode call (1 = the sandbox's first) whose replay on the heavy tier failed. */
    cell: z.int().optional(),
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
  /** Cluster mode only: this node, whether it reaches etcd, and the live nodes. */
  cluster: z
    .strictObject({
      node: z.string(),
      store: z.enum(["ok", "unreachable"]),
      nodes: z.array(z.string()),
    })
    .optional(),
});

export const exposePortRequest = z.strictObject({
  /** The port a server listens on inside the sandbox (127.0.0.1 or 0.0.0.0 there). */
  port: z.int().min(1).max(65535),
});

/** A proxied guest port: `url` is this server's reverse proxy to it (needs the same Authorization). */
export const exposedPort = z.strictObject({ port: z.int(), url: z.string() });

export const restoreRequest = z.strictObject({
  /** The new sandbox's idle timeout (as at create). */
  idleTimeoutMs: idleTimeoutMs.default(300_000),
});

export const forkRequest = z.strictObject({
  /** How many independent copies of the sandbox's current state to start. */
  count: z.int().min(1).max(16),
  /** The forks' idle timeout (as at create). */
  idleTimeoutMs: idleTimeoutMs.default(300_000),
});

/** A saved sandbox of this key: restore it any number of times (POST /snapshots/{snapshotId}/restore). */
export const snapshotInfo = z.strictObject({
  /** `snap_` and 24 hex digits. */
  id: z.string(),
  /** The sandbox it was taken of. */
  sandboxId: z.string(),
  tier: z.enum(TIERS),
  language: z.enum(LANGUAGES),
  createdAt: z.iso.datetime(),
  /** When the server deletes it (the server's --snapshot-ttl after it was taken). */
  expiresAt: z.iso.datetime(),
  /** Bytes it takes (counted against the key's maxSnapshotMb): disk for a heavy checkpoint or a snapshot in the --state-dir, memory for a nano history held in memory. */
  sizeBytes: z.int().min(0),
});

/** Response bodies: named components of the OpenAPI document (a schema used inside another becomes a $ref to it). */
export const responseSchemas = {
  SandboxInfo: sandboxInfo,
  SandboxList: z.strictObject({ sandboxes: z.array(sandboxInfo) }),
  RunResult: runResult,
  DisplayResult: displayResultSchema,
  CommandResult: commandResult,
  CommandInfo: commandInfo,
  CommandList: z.strictObject({ commands: z.array(commandInfo) }),
  CommandStatus: commandStatus,
  Killed: z.strictObject({ killed: z.boolean() }),
  DirEntry: dirEntrySchema,
  DirListing: z.strictObject({ entries: z.array(dirEntrySchema) }),
  Exists: z.strictObject({ exists: z.boolean() }),
  NetworkLogEntry: networkLogEntrySchema,
  NetworkLog: z.strictObject({ entries: z.array(networkLogEntrySchema) }),
  ExposedPort: exposedPort,
  PortList: z.strictObject({ ports: z.array(exposedPort) }),
  SnapshotInfo: snapshotInfo,
  SnapshotList: z.strictObject({ snapshots: z.array(snapshotInfo) }),
  ForkResult: z.strictObject({ sandboxes: z.array(sandboxInfo) }),
  Health: health,
  Error: errorBody,
} as const;
