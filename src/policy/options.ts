// Option schemas for Sandbox.create() and runCode(): one strict schema per concern, unknown keys
// rejected, defaults living here and nowhere else. Errors name the dotted field path.
import path from "node:path";
import { z } from "zod";
import { InvalidOptionsError, LIMIT_NAMES } from "../errors.js";
import type { DisplayResult } from "../protocol/display.js";
import { networkSchema } from "./network.js";

const MiB = 1024 * 1024;

/** Largest seed accepted: seeds must survive a JSON round trip exactly. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

/**
 * The tiers, the discriminant of the options union. Absent `tier` means the first. "auto" is a
 * sandbox that starts on the nano tier and moves to the heavy tier when a cell needs it.
 */
export const TIERS = ["nano", "heavy", "auto"] as const;
export type Tier = (typeof TIERS)[number];

/**
 * Every limit once: its schema (with its default) and the tiers that enforce it. Each tier's
 * `limits` schema is picked from this table, so a limit a tier does not enforce is an error there.
 * Tier "auto" takes every limit: the shared ones apply on both sides, `vfsBytes`/`vfsFiles` while
 * it runs on the nano tier, `cpus`/`diskMb` once it runs on the heavy tier (autoNanoOptions,
 * autoHeavyOptions).
 */
const LIMITS = {
  /** Memory cap in MiB: the guest's Wasm linear memory (nano), the sandbox's memory (heavy). */
  memoryMb: { tiers: ["nano", "heavy", "auto"], schema: z.int().min(48).max(4096).default(256) },
  /** Wall-clock limit of one runCode call (and the default of commands.run). */
  timeoutMs: { tiers: ["nano", "heavy", "auto"], schema: z.int().min(1).max(24 * 3600 * 1000).default(30_000) },
  /** How long a run may ignore the interrupt before its worker is killed. */
  graceMs: { tiers: ["nano", "heavy", "auto"], schema: z.int().min(0).max(60_000).default(2000) },
  /** stdout + stderr + result value bytes of one run. */
  outputBytes: { tiers: ["nano", "heavy", "auto"], schema: z.int().min(1).max(1024 * MiB).default(1 * MiB) },
  /** Bytes the guest may add to its in-memory file system (host-written files count too). */
  vfsBytes: { tiers: ["nano", "auto"], schema: z.int().min(0).max(4096 * MiB).default(64 * MiB) },
  /** Files, directories and links the guest may create in its in-memory file system. */
  vfsFiles: { tiers: ["nano", "auto"], schema: z.int().min(0).max(1_000_000).default(10_000) },
  /** CPU time per wall-clock time (cgroup quota), e.g. 0.5 or 2. */
  cpus: { tiers: ["heavy", "auto"], schema: z.number().min(0.01).max(64).default(1) },
  /** Size of each writable file system (/home/user and /tmp), in MiB; writes past it get ENOSPC. */
  diskMb: { tiers: ["heavy", "auto"], schema: z.int().min(1).max(64 * 1024).default(256) },
} as const satisfies Record<string, { tiers: readonly Tier[]; schema: z.ZodDefault<z.ZodNumber> }>;

type LimitField = keyof typeof LIMITS;
/** Every limit a run can hit is a field here (compile-time check against errors.ts's list). */
export const HIT_LIMITS: readonly LimitField[] = LIMIT_NAMES;
type LimitsOf<T extends Tier> = { [K in LimitField as T extends (typeof LIMITS)[K]["tiers"][number] ? K : never]: (typeof LIMITS)[K]["schema"] };

function limitsFor<T extends Tier>(tier: T) {
  const shape = Object.fromEntries(
    Object.entries(LIMITS)
      .filter(([, l]) => (l.tiers as readonly Tier[]).includes(tier))
      .map(([k, l]) => [k, l.schema]),
  ) as unknown as LimitsOf<T>;
  const schema = z.strictObject(shape);
  return schema.default(schema.parse({}) as never);
}

export const nanoLimitsSchema = limitsFor("nano");
export const heavyLimitsSchema = limitsFor("heavy");
export const autoLimitsSchema = limitsFor("auto");

const hostPath = z.string().min(1).refine((p) => path.isAbsolute(p), "must be an absolute host path");
const guestPath = z.string().min(1).refine((p) => p.startsWith("/") && !p.includes("\0"), "must be an absolute guest path");

export const mountSchema = z.strictObject({
  hostPath,
  guestPath,
  /** Read-only unless the caller says otherwise. */
  readOnly: z.boolean().default(true),
});

/**
 * Heavy-tier mounts (gVisor bind mounts): read-only, since what a guest writes must stay inside
 * its capped scratch, and only below /home/user or /tmp, whose tmpfs holds the mount point.
 */
export const heavyMountSchema = z.strictObject({
  hostPath,
  guestPath: guestPath.refine((p) => /^\/(home\/user|tmp)\/[^/]/.test(p), "must be below /home/user/ or /tmp/ on the heavy tier"),
  readOnly: z.literal(true, { error: "the heavy tier grants read-only mounts only (guest writes stay in its capped scratch)" }).default(true),
});

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "environment variable names are [A-Za-z_][A-Za-z0-9_]*");
const envSchema = z.record(envName, z.string().refine((v) => !v.includes("\0"), "must not contain NUL")).default({});
const seedSchema = z.int().min(0).max(MAX_SEED).optional();
type NameList = readonly [string, ...string[]];

/**
 * The engines' names, as the engine registry (engines/registry.ts) derives them: the languages
 * each tier runs and the heavy tier's backends. The schemas are built from these so a new
 * language or backend is added in the registry alone.
 */
export interface EngineNames<NL extends NameList, HL extends NameList, HB extends NameList, AL extends NameList, HI extends NameList> {
  nanoLanguages: NL;
  heavyLanguages: HL;
  heavyBackends: HB;
  /** The heavy tier's image presets (engines/heavy/presets.ts), the first the default. */
  heavyImages: HI;
  /** Languages tier "auto" runs: those with a runCode on both tiers. */
  autoLanguages: AL;
}

/** The per-tier option schemas (and their union) for the given engine names. */
export function sandboxOptionSchemas<const NL extends NameList, const HL extends NameList, const HB extends NameList, const AL extends NameList, const HI extends NameList>(names: EngineNames<NL, HL, HB, AL, HI>) {
  const nano = z.strictObject({
    /** "nano": WebAssembly in a locked-down worker process. */
    tier: z.literal("nano"),
    /** What runCode() runs. */
    language: z.enum(names.nanoLanguages).default(names.nanoLanguages[0]),
    limits: nanoLimitsSchema,
    /** Seed of every source of randomness the guest has. Omitted: a fresh one, reported in results. */
    seed: seedSchema,
    /** "virtual": a clock that starts at a fixed instant and ticks per read (deterministic).
     *  Default: "virtual" when a seed is given, else "real" (defaultClock). */
    clock: z.enum(["virtual", "real"]).optional(),
    /** Environment variables the guest sees; nothing of the host's leaks in. */
    env: envSchema,
    mounts: z.array(mountSchema).max(32).default([]),
    /** HTTP through the host, limited to these hosts (see policy/network.ts): JavaScript's `fetch`,
     *  Python's urllib.request and http.client. Default: no network. */
    network: networkSchema.optional(),
    /** Take a ready worker from the shared pool when one fits (no mounts). */
    pool: z.boolean().default(true),
  });
  const packages = z.array(z.string().regex(/^[a-z0-9][a-z0-9+.-]{0,99}$/, "must be a Debian package name")).max(256).default([]);
  const backend = z.enum(["auto", ...names.heavyBackends]).default("auto");
  const image = z.enum(names.heavyImages);
  const heavy = z.strictObject({
    /** "heavy": a Debian userland behind gVisor or a QEMU microVM. */
    tier: z.literal("heavy"),
    /** What runCode() runs (commands.run runs anything in the userland). */
    language: z.enum(names.heavyLanguages, { error: `the heavy tier's runCode runs ${names.heavyLanguages.join(", ")} (use commands.run for anything else)` }).default(names.heavyLanguages[0]),
    limits: heavyLimitsSchema,
    /** Seeds the guest language's random module in runCode. Omitted: a fresh one. */
    seed: seedSchema,
    /** Only "real": the heavy tier runs a real kernel clock. */
    clock: z.literal("real", { error: 'the heavy tier has the real clock only (a virtual clock is a nano-tier option)' }).optional(),
    env: envSchema,
    mounts: z.array(heavyMountSchema).max(32).default([]),
    /** Which backend runs the sandbox. "auto": the engine registry's first heavy backend that can
     *  serve the options (the microVM where KVM boots it and no mount is asked for, else gVisor). */
    backend,
    /** The image preset: "base" (python3, a shell, coreutils) or "data" (numpy, pandas, matplotlib,
     *  scipy, scikit-learn, ... with their modules imported before the first run; its sandboxes
     *  default to memoryMb 1024); built by `agentbox image build --preset NAME`. */
    image: image.default(names.heavyImages[0]),
    /** Extra Debian packages on top of the image preset; selects the image built by
     *  `agentbox image build [--preset NAME] --packages A,B`. */
    packages,
    /** Egress through a proxy the host runs for the sandbox (the guest has no network interface):
     *  HTTP_PROXY/HTTPS_PROXY are set, so curl, pip, git, requests and urllib use it; every
     *  connection is checked against this grant (see policy/network.ts). Default: no network. */
    network: networkSchema.optional(),
    /** Take a ready sandbox from the shared pool when one fits (no mounts). */
    pool: z.boolean().default(true),
  });
  /**
   * "auto": the sandbox starts on the nano tier and moves to the heavy tier (for good) when a cell
   * needs it (see engines/auto/engine.ts). Only what both tiers can honour the same way, so
   * nothing changes meaning at the move: the real clock, read-only mounts below /home/user or
   * /tmp; the heavy-only fields (`backend`, `packages`, `limits.cpus`/`diskMb`) apply once it
   * runs there, the nano-only limits (`vfsBytes`, `vfsFiles`) until then.
   */
  const auto = z.strictObject({
    tier: z.literal("auto"),
    /** What runCode() runs: a language with a runCode on both tiers. */
    language: z
      .enum(names.autoLanguages, {
        error: `tier "auto" runs ${names.autoLanguages.join(", ")} only (the languages with a runCode on the heavy tier it may move to); use tier "nano" for JavaScript or TypeScript`,
      })
      .default(names.autoLanguages[0]),
    limits: autoLimitsSchema,
    /** Seeds every source of randomness on the nano tier; Python's `random` only, after a move to the heavy tier. */
    seed: seedSchema,
    /** Only "real": the sandbox may move to the heavy tier, which has no virtual clock. */
    clock: z.literal("real", { error: 'tier "auto" has the real clock only (its sandbox may move to the heavy tier, which has no virtual clock)' }).optional(),
    env: envSchema,
    /** Read-only host directories below /home/user or /tmp: mounted on both tiers, never copied at a move. */
    mounts: z.array(heavyMountSchema).max(32).default([]),
    /** The heavy tier's backend, once the sandbox runs there. */
    backend,
    /** The heavy tier's image preset, once the sandbox runs there. Omitted: "data" where that image
     *  is built (the resolver decides at create time), else "base". */
    image: image.optional(),
    /** Extra Debian packages of the heavy tier's image, once the sandbox runs there. */
    packages,
    /** The same grant on both tiers: Python's urllib through the host broker on nano, the egress
     *  proxy once on heavy (see policy/network.ts); one network log across the move. */
    network: networkSchema.optional(),
    /** Take ready workers (nano) and sandboxes (heavy) from the shared pools. */
    pool: z.boolean().default(true),
  });
  return { nano, heavy, auto, union: z.discriminatedUnion("tier", [nano, heavy, auto]) } as const;
}

/** The schemas with plain strings for names: what engines see without depending on the registry. */
type AnySchemas = ReturnType<typeof sandboxOptionSchemas<NameList, NameList, NameList, NameList, NameList>>;
export type NanoOptions = z.output<AnySchemas["nano"]>;
export type HeavyOptions = z.output<AnySchemas["heavy"]>;
export type AutoOptions = z.output<AnySchemas["auto"]>;
export type NanoLimits = z.output<typeof nanoLimitsSchema>;
export type HeavyLimits = z.output<typeof heavyLimitsSchema>;
export type AutoLimits = z.output<typeof autoLimitsSchema>;

/** The clock a sandbox gets when the caller names none: deterministic exactly when seeded (nano). */
export function defaultClock(tier: Tier, seedGiven: boolean): "virtual" | "real" {
  return tier === "nano" && seedGiven ? "virtual" : "real";
}

/**
 * The nano side of a tier "auto" sandbox: the options it runs with until a cell needs the heavy
 * tier. Input for the nano schema (which fills in what is not named here).
 */
export function autoNanoOptions(o: AutoOptions): z.input<AnySchemas["nano"]> {
  const { memoryMb, timeoutMs, graceMs, outputBytes, vfsBytes, vfsFiles } = o.limits;
  return {
    tier: "nano",
    language: o.language,
    limits: { memoryMb, timeoutMs, graceMs, outputBytes, vfsBytes, vfsFiles },
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
    clock: "real",
    env: o.env,
    mounts: o.mounts,
    ...(o.network ? { network: o.network } : {}),
    pool: o.pool,
  };
}

/**
 * The heavy side of a tier "auto" sandbox: the options of the heavy sandbox it moves to. The one
 * place that chooses them. Input for the heavy schema, which fills in the rest.
 */
export function autoHeavyOptions(o: AutoOptions): z.input<AnySchemas["heavy"]> {
  const { memoryMb, timeoutMs, graceMs, outputBytes, cpus, diskMb } = o.limits;
  return {
    tier: "heavy",
    language: o.language,
    limits: { memoryMb, timeoutMs, graceMs, outputBytes, cpus, diskMb },
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
    env: o.env,
    mounts: o.mounts,
    backend: o.backend,
    ...(o.image !== undefined ? { image: o.image } : {}),
    packages: o.packages,
    ...(o.network ? { network: o.network } : {}),
    pool: o.pool,
  };
}

type Schemas = { [T in Tier]: z.ZodObject };

/**
 * Parse sandbox options with the schema of their tier (absent: "nano"). A field that exists only
 * on another tier is named as such ("limits.cpus: not used by the nano tier; it applies to tier
 * "heavy""), not as an unknown key. Keys whose value is undefined count as absent.
 */
export function parseTierOptions<S extends Schemas>(schemas: S, input: unknown): z.output<S[Tier]> {
  const raw = dropUndefined(input ?? {});
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new InvalidOptionsError([{ path: "", message: "must be an object" }]);
  const obj = raw as Record<string, unknown>;
  const asked = obj.tier ?? TIERS[0];
  const known = (TIERS as readonly unknown[]).includes(asked);
  // An unknown tier is named, and the rest is still checked (against the default tier's schema).
  const tierIssues = known ? [] : [{ path: "tier", message: `must be one of ${TIERS.map((t) => JSON.stringify(t)).join(", ")}, got ${JSON.stringify(asked)}` }];
  const tier: Tier = known ? (asked as Tier) : TIERS[0];
  const r = schemas[tier].safeParse({ ...obj, tier });
  if (r.success && known) return r.data as z.output<S[Tier]>;
  if (r.success) throw new InvalidOptionsError(tierIssues);
  const others = TIERS.filter((t) => t !== tier);
  const issues = r.error.issues.flatMap((i) => {
    const at = i.path.map(String);
    if (i.code !== "unrecognized_keys") return [{ path: at.join("."), message: i.message }];
    return i.keys.map((k) => {
      const field = [...at, k].join(".");
      const owner = others.find((t) => hasField(schemas[t], [...at, k]));
      return { path: field, message: owner ? `not used by the ${tier} tier; it applies to tier "${owner}"` : "unknown option" };
    });
  });
  throw new InvalidOptionsError([...tierIssues, ...issues]);
}

/** Whether `schema` (an object schema, defaults and optionals unwrapped) has a field at `at`. */
function hasField(schema: z.ZodType, at: string[]): boolean {
  let s: z.ZodType = schema;
  for (const k of at) {
    while (s instanceof z.ZodDefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
    if (!(s instanceof z.ZodObject)) return false;
    const next = (s.shape as Record<string, z.ZodType | undefined>)[k];
    if (!next) return false;
    s = next;
  }
  return true;
}

/** Drop undefined-valued keys at the top level and in `limits` (a CLI passing `cpus: undefined` gave nothing). */
function dropUndefined(v: unknown): unknown {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return v;
  const out = Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined));
  if (typeof out.limits === "object" && out.limits !== null && !Array.isArray(out.limits)) {
    out.limits = Object.fromEntries(Object.entries(out.limits).filter(([, x]) => x !== undefined));
  }
  return out;
}

/**
 * Which fields of `input` the caller gave (top-level keys and `limits` keys), so a surface can
 * tell a value asked for from a default without reading its raw input again.
 */
export interface GivenFields {
  fields: ReadonlySet<string>;
  limits: ReadonlySet<string>;
}

export function givenFields(input: unknown): GivenFields {
  const raw = dropUndefined(input ?? {}) as Record<string, unknown>;
  const limits = typeof raw.limits === "object" && raw.limits !== null ? Object.keys(raw.limits) : [];
  return { fields: new Set(Object.keys(raw)), limits: new Set(limits) };
}

/** `input` without the fields `tier`'s schema does not have (top level and limits): for a surface
 *  that derives a sandbox of another tier from the same options (the MCP server's JavaScript one). */
export function keepFieldsOf<S extends Schemas>(schemas: S, tier: Tier, input: Record<string, unknown>): Record<string, unknown> {
  const out = Object.fromEntries(Object.entries(input).filter(([k]) => hasField(schemas[tier], [k])));
  if (typeof out.limits === "object" && out.limits !== null) {
    out.limits = Object.fromEntries(Object.entries(out.limits).filter(([k]) => hasField(schemas[tier], ["limits", k])));
  }
  return { ...out, tier };
}

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
  /**
   * Keep a background command's standard input open (after `stdin`'s bytes, if given) for its
   * handle's writeStdin() and closeStdin().
   */
  stdinOpen: z.boolean().optional(),
  /**
   * Start the command and return a handle as soon as it runs, without waiting for it (heavy tier).
   * It then has no time limit unless `timeoutMs` is given.
   */
  background: z.boolean().optional(),
});

export const runOptionsSchema = z.strictObject({
  timeoutMs: z.int().min(1).max(24 * 3600 * 1000).optional(),
  signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal, "must be an AbortSignal").optional(),
  onStdout: z.custom<(chunk: string) => void>((v) => typeof v === "function", "must be a function").optional(),
  onStderr: z.custom<(chunk: string) => void>((v) => typeof v === "function", "must be a function").optional(),
  /** Each rich result (display(), the final expression's bundle) as it happens, in order. */
  onResult: z.custom<(result: DisplayResult) => void>((v) => typeof v === "function", "must be a function").optional(),
});

/** Most copies one sb.fork(n) makes. */
export const MAX_FORKS = 16;

export const forkOptionsSchema = z.strictObject({
  /** One seed per fork: each fork's randomness is re-seeded with its own after the copy. Absent:
   *  every fork continues its parent's random stream (forks of a seeded sandbox draw alike). */
  seeds: z.array(z.int().min(0).max(MAX_SEED)).max(MAX_FORKS).optional(),
});

export const poolOptionsSchema = z
  .strictObject({
    /** A fixed number of ready workers per nano language (default 2). 0 turns the pools off.
     *  Give `size` or `min`/`max`, not both. */
    size: z.int().min(0).max(64).optional(),
    /** Adaptive pools: ready workers each nano language's pool keeps even when idle (default:
     *  the smaller of 2 and `max`)... */
    min: z.int().min(0).max(64).optional(),
    /** ...and the most it grows to under demand (default: the larger of 8 and `min`). Giving
     *  either makes the pools adaptive. */
    max: z.int().min(0).max(64).optional(),
    /** Ready workers of every pool together (nano and heavy) never hold more than this, by a
     *  per-worker estimate (the measured RSS of a ready worker). Default: no budget. */
    memoryBudgetMb: z.int().min(1).max(1 << 20).optional(),
    /** An adaptive pool is sized by the largest burst of takes within 5 s seen in the last
     *  `idleShrinkMs` (default 30 s); after that long without takes it is back to `min`. */
    idleShrinkMs: z.int().min(0).max(24 * 3600_000).optional(),
    /** Heavy tier: ready sandboxes kept per heavy configuration (each holds ~60–100 MB), a fixed
     *  size. Default: the smaller of `size` (or `min`) and 1, so `size: 0` still turns every pool off. */
    heavy: z.int().min(0).max(16).optional(),
  })
  .refine((o) => o.size === undefined || (o.min === undefined && o.max === undefined), { message: "give size (a fixed pool) or min/max (an adaptive one), not both", path: ["size"] })
  .refine((o) => o.min === undefined || o.max === undefined || o.min <= o.max, { message: "must not be above max", path: ["min"] });

/** Window in which takes count as one burst (adaptive pools). */
export const POOL_DEMAND_WINDOW_MS = 5000;
export const DEFAULT_POOL_IDLE_SHRINK_MS = 30_000;

/** configurePool()'s options resolved: nano pools between `min` and `max` (equal: fixed). */
export interface PoolConfig {
  min: number;
  max: number;
  heavy: number;
  memoryBudgetMb: number;
  idleShrinkMs: number;
  windowMs: number;
}

export function resolvePoolOptions(o: z.output<typeof poolOptionsSchema>, defaultHeavy: number): PoolConfig {
  const adaptive = o.min !== undefined || o.max !== undefined;
  const max = adaptive ? (o.max ?? Math.max(8, o.min ?? 0)) : (o.size ?? 2);
  const min = adaptive ? (o.min ?? Math.min(2, max)) : max;
  return {
    min,
    max,
    heavy: o.heavy ?? Math.min(min, defaultHeavy),
    memoryBudgetMb: o.memoryBudgetMb ?? Infinity,
    idleShrinkMs: o.idleShrinkMs ?? DEFAULT_POOL_IDLE_SHRINK_MS,
    windowMs: POOL_DEMAND_WINDOW_MS,
  };
}

export type NanoLimitsInput = z.input<typeof nanoLimitsSchema>;
export type HeavyLimitsInput = z.input<typeof heavyLimitsSchema>;
export type AutoLimitsInput = z.input<typeof autoLimitsSchema>;
/** Limits as any surface may give them: the union of every tier's fields. */
export type LimitsInput = NanoLimitsInput | HeavyLimitsInput | AutoLimitsInput;
/** Resolved limits of any tier. */
export type Limits = NanoLimits | HeavyLimits | AutoLimits;
export type MountInput = z.input<typeof mountSchema>;
export type Mount = z.output<typeof mountSchema>;
export type RunOptionsInput = z.input<typeof runOptionsSchema>;
export type RunOptions = z.output<typeof runOptionsSchema>;
/** A command's options; `background` is added by commands.run's overloads (it changes what run returns). */
export type CommandOptionsInput = Omit<z.input<typeof commandOptionsSchema>, "background">;
export type PoolOptionsInput = z.input<typeof poolOptionsSchema>;
export type ForkOptionsInput = z.input<typeof forkOptionsSchema>;

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
