// Host↔worker messages: a discriminated union per direction, versioned by PROTOCOL_VERSION.
// Host→worker messages are built by the host (typed, trusted). Worker→host messages come from a
// process that runs guest code, so they are hostile input: every one is checked against
// `workerMessageSchema` (sizes capped, unknown shapes rejected) before the host acts on it.
import { z } from "zod";
import { LIMIT_NAMES } from "../errors.js";
import { FETCH_LIMITS } from "./caps.js";
import { displayResultProblem, MIME_TYPES, type DisplayResult } from "./display.js";

export { LIMIT_NAMES };

export interface WorkerLimits {
  memoryBytes: number;
  outputBytes: number;
  vfsBytes: number;
  vfsFiles: number;
}

export interface WorkerMount {
  hostPath: string;
  guestPath: string;
  readOnly: boolean;
}

export type FsOp = "write" | "read" | "list" | "remove" | "exists" | "mkdir";

export type HostMessage =
  | {
      type: "configure";
      id: number;
      seed: number;
      clock: "virtual" | "real";
      env: Record<string, string>;
      limits: WorkerLimits;
      mounts: WorkerMount[];
      /** JavaScript workers: whether run code is TypeScript to type-strip first. */
      language?: "javascript" | "typescript";
      /** A network grant exists: the JavaScript guest gets `fetch`, the Python guest's urllib and
       *  http.client reach the host (which checks every URL); without it, the worker refuses. */
      network?: { maxRequestBytes: number };
    }
  | {
      type: "run";
      id: number;
      code: string;
      /**
       * Tier "auto" (Python workers): parse the code first and, when it needs what only the heavy
       * tier has, answer `needsHeavy` without running any of it. Decided in the guest, never by
       * the host: the host does not parse guest code.
       */
      nanoOnly?: boolean;
    }
  | { type: "fs"; id: number; op: FsOp; path: string; data?: string; recursive?: boolean }
  /**
   * Replace the sandbox's seeded randomness source with the stream of `seed` (a fork given its
   * own seed): the worker's entropy (Python's os.urandom, JavaScript's Math.random and crypto),
   * and Python's `random` module reseeded from it. Answered with a `reply`.
   */
  | { type: "reseed"; id: number; seed: number }
  | FetchResult;

/**
 * The host's answer to a worker's `fetch` (run `id`, request `req`); body base64. A refusal by the
 * grant or a cap (nothing was sent) carries code NETWORK_DENIED, which the guest's error gets too.
 */
export type FetchResult =
  | { type: "fetchResult"; id: number; req: number; ok: true; status: number; statusText: string; url: string; redirected: boolean; headers: [string, string][]; body: string }
  | { type: "fetchResult"; id: number; req: number; ok: false; error: { name: "TypeError" | "RangeError"; message: string; code?: "NETWORK_DENIED" } };


/** Bytes of control pipe (fd 3) the host writes to interrupt a run; each byte is a reason. */
export const INTERRUPT_REASON = { timeout: 1, abort: 2 } as const;

const id = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const shortText = z.string().max(64 * 1024);

export const guestErrorSchema = z.strictObject({
  name: z.string().max(256),
  message: shortText,
  traceback: z.string().max(256 * 1024),
});

export const dirEntrySchema = z.strictObject({
  name: z.string().max(4096),
  path: z.string().max(8192),
  type: z.enum(["file", "dir", "symlink"]),
  size: z.int().min(0),
});

/** The host's check of one result from a worker (hostile input; the worker checked it first). */
export const checkedDisplayResultSchema = z
  .unknown()
  .superRefine((r, ctx) => {
    const problem = displayResultProblem(r);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  })
  .transform((r) => r as DisplayResult);

/** A display result as the HTTP API and its OpenAPI document describe it. */
export const displayResultSchema = z.strictObject({
  data: z.partialRecord(z.enum(MIME_TYPES), z.string()).describe("MIME type → content; image/png, image/jpeg and application/pdf are base64"),
  main: z.boolean().describe("true for the cell's final expression (execute_result), false for display() calls"),
});

export const workerMessageSchema = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("ready"),
    v: z.int(),
    pythonVersion: z.string().max(256).optional(),
    pyodideVersion: z.string().max(64).optional(),
    /** Name and version of a non-Python engine (e.g. "quickjs 0.32.0"). */
    engine: z.string().max(256).optional(),
  }),
  z.strictObject({
    type: z.literal("output"),
    id,
    stream: z.enum(["stdout", "stderr"]),
    data: z.string().max(1024 * 1024),
  }),
  z.strictObject({
    type: z.literal("result"),
    id,
    value: z.string().nullable(),
    error: guestErrorSchema.nullable(),
    limitHit: z.enum(LIMIT_NAMES).nullable(),
    durationMs: z.number().min(0),
    vfsDigest: z.string().regex(/^[0-9a-f]{64}$/),
  }),
  /**
   * One rich result of run `id` (a display() call, the final expression's bundle) as it happens,
   * already checked and counted against the output cap by the worker; the host checks again.
   */
  z.strictObject({ type: z.literal("display"), id, result: checkedDisplayResultSchema }),
  z.strictObject({
    type: z.literal("reply"),
    id,
    ok: z.boolean(),
    data: z.string().optional(),
    exists: z.boolean().optional(),
    entries: z.array(dirEntrySchema).max(1_000_000).optional(),
    errno: z.string().max(32).optional(),
    message: shortText.optional(),
    limit: z.enum(["vfsBytes", "vfsFiles"]).optional(),
  }),
  /** The answer to a `nanoOnly` run whose code needs the heavy tier: nothing of it ran. */
  z.strictObject({ type: z.literal("needsHeavy"), id, reason: z.string().min(1).max(1024) }),
  z.strictObject({ type: z.literal("fatal"), message: shortText }),
  z.strictObject({
    type: z.literal("fetch"),
    id,
    req: z.int().min(1).max(2 ** 31),
    url: z.string().max(FETCH_LIMITS.urlChars),
    method: z.string().regex(/^[A-Z]{1,16}$/),
    headers: z.array(z.tuple([z.string().max(FETCH_LIMITS.headerNameChars), z.string().max(FETCH_LIMITS.headerValueChars)])).max(FETCH_LIMITS.headers),
    body: z.string().max(90 * 1024 * 1024).regex(/^[A-Za-z0-9+/]*={0,2}$/).optional(),
  }),
]);

export type WorkerMessage = z.infer<typeof workerMessageSchema>;
export type GuestError = z.infer<typeof guestErrorSchema>;
export type DirEntry = z.infer<typeof dirEntrySchema>;
