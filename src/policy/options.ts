// Option schemas for Sandbox.create() and runCode(): one strict schema per concern, unknown keys
// rejected, defaults living here and nowhere else. Errors name the dotted field path.
import path from "node:path";
import { z } from "zod";
import { InvalidOptionsError } from "../errors.js";
import { networkSchema } from "./network.js";

const MiB = 1024 * 1024;

/** Largest seed accepted: seeds must survive a JSON round trip exactly. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

export const limitsSchema = z.strictObject({
  /** Cap on the guest's Wasm linear memory, in MiB. The interpreter alone needs ~32. */
  memoryMb: z.int().min(48).max(4096).default(256),
  /** Wall-clock limit of one runCode call. */
  timeoutMs: z.int().min(1).max(24 * 3600 * 1000).default(30_000),
  /** How long a run may ignore the interrupt before its worker is killed. */
  graceMs: z.int().min(0).max(60_000).default(500),
  /** stdout + stderr + result value bytes of one run. */
  outputBytes: z.int().min(1).max(1024 * MiB).default(1 * MiB),
  /** Bytes the guest may add to its file system (host-written files count too). */
  vfsBytes: z.int().min(0).max(4096 * MiB).default(64 * MiB),
  /** Files, directories and links the guest may create. */
  vfsFiles: z.int().min(0).max(1_000_000).default(10_000),
  /** Heavy tier: CPU time per wall-clock time (cgroup quota), e.g. 0.5 or 2. */
  cpus: z.number().min(0.01).max(64).default(1),
  /** Heavy tier: size of each writable file system (/home/user and /tmp), in MiB; writes past it get ENOSPC. */
  diskMb: z.int().min(1).max(64 * 1024).default(256),
});

export const mountSchema = z.strictObject({
  hostPath: z.string().min(1).refine((p) => path.isAbsolute(p), "must be an absolute host path"),
  guestPath: z.string().min(1).refine((p) => p.startsWith("/") && !p.includes("\0"), "must be an absolute guest path"),
  /** Read-only unless the caller says otherwise. */
  readOnly: z.boolean().default(true),
});

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "environment variable names are [A-Za-z_][A-Za-z0-9_]*");

export const sandboxOptionsSchema = z.strictObject({
  /** "nano": WebAssembly in a worker process. "heavy": a real Linux userland (gVisor / microVM). */
  tier: z.enum(["nano", "heavy"]).default("nano"),
  /** What runCode() runs. */
  language: z.enum(["python", "javascript", "typescript"]).default("python"),
  limits: limitsSchema.default(limitsSchema.parse({})),
  /** Seed of every source of randomness the guest has. Omitted: a fresh one, reported in results. */
  seed: z.int().min(0).max(MAX_SEED).optional(),
  /** "virtual": a clock that starts at a fixed instant and ticks per read (deterministic).
   *  Default: "virtual" when a seed is given, else "real". */
  clock: z.enum(["virtual", "real"]).optional(),
  /** Environment variables the guest sees in os.environ; nothing of the host's leaks in. */
  env: z.record(envName, z.string().refine((v) => !v.includes("\0"), "must not contain NUL")).default({}),
  mounts: z.array(mountSchema).max(32).default([]),
  /** JavaScript/TypeScript nano tier: a guest `fetch` limited to these hosts (see policy/network.ts). Default: no network. */
  network: networkSchema.optional(),
  /** Heavy tier: which backend runs the sandbox. "auto" picks gVisor (the only one built so far). */
  backend: z.enum(["auto", "gvisor", "microvm"]).default("auto"),
  /** Heavy tier: extra Debian packages; selects the image built by `agentbox image build --packages`. */
  packages: z.array(z.string().regex(/^[a-z0-9][a-z0-9+.-]{0,99}$/, "must be a Debian package name")).max(256).default([]),
  /** Take a ready worker from the shared pool when one fits (no mounts). */
  pool: z.boolean().default(true),
});

export const commandOptionsSchema = z.strictObject({
  timeoutMs: z.int().min(1).max(24 * 3600 * 1000).optional(),
  signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, "must be an AbortSignal").optional(),
  onStdout: z.custom<(chunk: string) => void>((v) => typeof v === "function", "must be a function").optional(),
  onStderr: z.custom<(chunk: string) => void>((v) => typeof v === "function", "must be a function").optional(),
  /** Working directory in the guest (default /home/user). */
  cwd: z.string().min(1).refine((p) => p.startsWith("/") && !p.includes("\0"), "must be an absolute guest path").optional(),
  /** Extra environment variables for this command. */
  env: z.record(envName, z.string().refine((v) => !v.includes("\0"), "must not contain NUL")).optional(),
  /** Bytes fed to the command's standard input. */
  stdin: z.union([z.string(), z.instanceof(Uint8Array)]).optional(),
});

export const runOptionsSchema = z.strictObject({
  timeoutMs: z.int().min(1).max(24 * 3600 * 1000).optional(),
  signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, "must be an AbortSignal").optional(),
  onStdout: z.custom<(chunk: string) => void>((v) => typeof v === "function", "must be a function").optional(),
  onStderr: z.custom<(chunk: string) => void>((v) => typeof v === "function", "must be a function").optional(),
});

export const poolOptionsSchema = z.strictObject({
  /** Ready workers kept for sandboxes without mounts. 0 turns the pool off. */
  size: z.int().min(0).max(64).default(2),
  /** Heavy tier: ready sandboxes kept per heavy configuration (each holds ~60–100 MB). Default:
   *  the smaller of `size` and 1, so `size: 0` still turns every pool off. */
  heavy: z.int().min(0).max(16).optional(),
});

export type LimitsInput = z.input<typeof limitsSchema>;
export type Limits = z.output<typeof limitsSchema>;
export type MountInput = z.input<typeof mountSchema>;
export type Mount = z.output<typeof mountSchema>;
export type SandboxOptionsInput = z.input<typeof sandboxOptionsSchema>;
export type SandboxOptions = z.output<typeof sandboxOptionsSchema>;
export type RunOptionsInput = z.input<typeof runOptionsSchema>;
export type RunOptions = z.output<typeof runOptionsSchema>;
export type CommandOptionsInput = z.input<typeof commandOptionsSchema>;
export type PoolOptionsInput = z.input<typeof poolOptionsSchema>;

/** Parse with a schema, turning failures into one InvalidOptionsError naming every bad field. */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, prefix = ""): z.output<S> {
  const r = schema.safeParse(input ?? {});
  if (r.success) return r.data;
  throw new InvalidOptionsError(
    r.error.issues.map((i) => ({
      path: [prefix, ...i.path.map(String)].filter(Boolean).join("."),
      message: i.message,
    })),
  );
}

/** The one rule for a guest path given to the files API (library, HTTP, MCP) or as a mount point. */
export const GUEST_PATH_RULE = 'must be absolute, with no ".." segment and no NUL byte';

/**
 * Check a guest path against GUEST_PATH_RULE and normalise what remains (`.` segments, repeated
 * and trailing slashes). `..` is refused rather than resolved, so a path means the same on every
 * surface and never silently names another file.
 */
export function normalizeGuestPath(p: string, field = "path"): string {
  if (typeof p !== "string" || p.length === 0) throw new InvalidOptionsError([{ path: field, message: "must be a non-empty string" }]);
  if (!p.startsWith("/") || p.includes("\0") || p.split("/").includes("..")) {
    throw new InvalidOptionsError([{ path: field, message: `${GUEST_PATH_RULE}, got ${JSON.stringify(p)}` }]);
  }
  if (p.length > 4096) throw new InvalidOptionsError([{ path: field, message: "longer than 4096 characters" }]);
  return path.posix.normalize(p).replace(/(.)\/+$/, "$1");
}
