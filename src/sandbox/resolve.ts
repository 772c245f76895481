// The one resolver: what any surface received (library call, HTTP body, CLI flags, MCP session
// options) becomes engine options here: parsed by its tier's schema with defaults, seed drawn,
// clock chosen, mounts normalised and their host paths made real, the engines that may serve it
// chosen from the registry. Surfaces call it once and read `given` to tell asked-for values from
// defaults; they never re-read their raw input for that.
import { randomInt } from "node:crypto";
import fs from "node:fs";
import type { z } from "zod";
import { InvalidOptionsError } from "../errors.js";
import { findImage } from "../engines/heavy/image.js";
import { IMAGE_DEFAULT_MEMORY_MB, imagePackages } from "../engines/heavy/presets.js";
import { candidateEngines, optionSchemas } from "../engines/registry.js";
import { defaultClock, givenFields, keepFieldsOf, normalizeGuestPath, parseTierOptions, type GivenFields, type Mount, type Tier } from "../policy/options.js";

type NanoInput = z.input<typeof optionSchemas.nano>;
type HeavyInput = z.input<typeof optionSchemas.heavy>;
type AutoInput = z.input<typeof optionSchemas.auto>;

/**
 * Options of Sandbox.create(), discriminated by `tier` (absent: "nano"). `tier: "auto"` starts on
 * the nano tier and moves to the heavy tier when a cell needs it (Python only).
 */
export type SandboxOptionsInput = (Omit<NanoInput, "tier"> & { tier?: "nano" }) | HeavyInput | AutoInput;
/** Options after parsing: every default filled in; `seed` and `clock` only when the caller gave them. */
export type SandboxOptions = z.output<typeof optionSchemas.nano> | z.output<typeof optionSchemas.heavy> | z.output<typeof optionSchemas.auto>;
export type Language = SandboxOptions["language"];

/** What a surface needs to start a sandbox and to check it against its own policy (quotas, mount roots). */
export interface ResolvedSandboxOptions {
  /** The parsed options (defaults filled in). */
  readonly options: SandboxOptions;
  /** Which fields the caller gave, top level and in `limits`. */
  readonly given: GivenFields;
  /** The caller's seed, or a fresh one. */
  readonly seed: number;
  readonly clock: "virtual" | "real";
  /** Guest paths normalised; host paths real (symlinks resolved) existing directories. */
  readonly mounts: readonly Mount[];
  /** Ids of the registry's engines that may serve it, in order of preference (the first that fits starts). */
  readonly engines: readonly string[];
}

/**
 * Resolve sandbox options. Throws InvalidOptionsError naming the field (an option of another
 * tier, a network grant for an engine without one, a mount that is no directory), or
 * TierUnavailableError when no engine of this build runs the tier and language.
 */
export function resolveSandboxOptions(input: unknown): ResolvedSandboxOptions {
  const options = parseTierOptions(optionSchemas, input) as SandboxOptions;
  const given = givenFields(input);
  // Tier "auto" moves to the heavy tier for what nano lacks, most often the data stack: its image
  // is "data" where that is built, unless the caller names one. Chosen once, here, and reported.
  if (options.tier === "auto" && options.image === undefined) options.image = findImage(imagePackages("data", options.packages)) ? "data" : "base";
  const image = options.tier === "nano" ? undefined : options.image;
  const imageMemory = image !== undefined && !given.limits.has("memoryMb") ? IMAGE_DEFAULT_MEMORY_MB[image] : undefined;
  // A copy: the parsed default may be the schema's own object.
  if (imageMemory !== undefined && options.tier !== "nano") options.limits = { ...options.limits, memoryMb: imageMemory };
  const seed = options.seed ?? randomInt(0, 2 ** 48 - 1);
  const clock = options.clock ?? defaultClock(options.tier, options.seed !== undefined);
  const mounts = options.mounts.map((m, i) => ({ ...m, guestPath: normalizeGuestPath(m.guestPath, `mounts.${i}.guestPath`), hostPath: realDirectory(m.hostPath, i) }));
  const engines = candidateEngines({ options, seed, clock, mounts }).map((e) => e.id);
  return { options, given, seed, clock, mounts, engines };
}

/** A mount's host path with symlinks resolved, so the grant is what it points to, and only that. */
function realDirectory(hostPath: string, i: number): string {
  let real: string;
  try {
    real = fs.realpathSync(hostPath);
    if (!fs.statSync(real).isDirectory()) throw new Error("not a directory");
  } catch (e) {
    throw new InvalidOptionsError([{ path: `mounts.${i}.hostPath`, message: `${JSON.stringify(hostPath)} is not an existing directory (${(e as Error).message})` }]);
  }
  return real;
}

/**
 * Options given (or resolved) for one tier, carried over to `tier`: the fields that tier has no
 * use for are dropped (top level and limits), so a surface deriving a second sandbox from the same
 * options (the MCP server's JavaScript one beside a heavy Python one) does not name them.
 */
export function sandboxOptionsForTier(options: object, tier: Tier): SandboxOptionsInput {
  return keepFieldsOf(optionSchemas, tier, { ...options }) as SandboxOptionsInput;
}
