// The engine registry: every engine describes itself here, once: its tier, the languages it runs,
// its backend (heavy tier), the option fields it does not serve, how it starts, pools and warms up,
// and what it reports. Starting, pooling, the option schemas' language/backend names and the
// "auto" backend choice all iterate this list; nothing else names an engine.
// A new language or backend: a folder under engines/ and one entry in ENGINES.
import { z } from "zod";
import { InvalidOptionsError, SavedStateError, TierUnavailableError } from "../errors.js";
import { checkSecretNames, SecretSet } from "../policy/secrets.js";
import { autoHeavyOptions, autoNanoOptions, parseOptions, sandboxOptionSchemas, type AutoOptions, type HeavyOptions, type Mount, type NanoOptions, type Tier } from "../policy/options.js";
import { AutoEngine } from "./auto/engine.js";
import type { Engine, EngineInfo, EngineSnapshot } from "./engine.js";
import { GvisorBox } from "./heavy-gvisor/box.js";
import { boxSpec, GvisorEngine, loadGvisorSnapshot, specKey, type GvisorEngineConfig } from "./heavy-gvisor/engine.js";
import { imagePackages, IMAGE_PRESET_NAMES } from "./heavy/presets.js";
import { loadMicrovmSnapshot, MicrovmEngine, microvmOnKvm, type MicrovmEngineConfig } from "./microvm/engine.js";
import { poolFor } from "./pools.js";
import { PythonWasmEngine } from "./python-wasm/engine.js";
import { spawnPythonWorker } from "./python-wasm/runtime.js";
import { QuickJsWasmEngine } from "./quickjs-wasm/engine.js";
import { loadReplaySnapshot, ReplayEngine, type ReplayableEngine, type ReplayConfig } from "./replay/engine.js";
import { spawnJsWorker } from "./quickjs-wasm/runtime.js";

/** What an engine's start gets: the parsed options of its tier and what the resolver derived. */
export interface EngineStart<O> {
  options: O;
  /** The caller's seed, or the fresh one drawn for the sandbox. */
  seed: number;
  clock: "virtual" | "real";
  /** Guest paths normalised, host paths resolved to real (symlink-free) directories. */
  mounts: Mount[];
  /** The sandbox's network secrets when a caller made them already (tier auto: one set, so both sides' guests see the same placeholders). */
  secrets?: SecretSet | undefined;
}

interface DescriptorBase<T extends Tier, O> {
  /** Stable name, e.g. "python-wasm"; the resolver reports which engines may serve a sandbox by it. */
  readonly id: string;
  readonly tier: T;
  readonly languages: readonly string[];
  /**
   * Fields of the tier's schema this engine does not serve, with why; giving one is an error
   * naming the field and the engines of the tier that do serve it.
   */
  readonly refuses?: { readonly [K in keyof O]?: string };
  start(s: EngineStart<O>): Promise<Engine>;
  /** Refuse, when the options are resolved (before anything starts), options this engine cannot serve. */
  check?(s: EngineStart<O>): void;
  /** Start one pooled worker now (Sandbox.configurePool), for engines whose pool has one kind. */
  prewarm?(): void;
  /** What Sandbox.info reports beside the tier. */
  info(engine: Engine): Partial<EngineInfo>;
  /**
   * A snapshot of this engine from what its `EngineSnapshot.persist` wrote into `dir` (`saved`: the
   * descriptor it returned, read back from disk, so unchecked), for a sandbox of these options.
   * Throws SavedStateError when `saved` or its files are not what this engine wrote.
   */
  load?(s: EngineStart<O>, saved: unknown, dir: string): Promise<EngineSnapshot>;
}

export type NanoEngineDescriptor = DescriptorBase<"nano", NanoOptions>;

export interface HeavyEngineDescriptor extends DescriptorBase<"heavy", HeavyOptions> {
  /** The `backend` option's name for this engine. */
  readonly backend: string;
  /** Whether `backend: "auto"` takes this engine for these options (entries are asked in order). */
  auto(s: EngineStart<HeavyOptions>): Promise<boolean>;
}

/** Tier "auto": a sandbox that runs on a nano engine and moves to a heavy one (engines/auto). */
export type AutoEngineDescriptor = DescriptorBase<"auto", AutoOptions>;

export type EngineDescriptor = NanoEngineDescriptor | HeavyEngineDescriptor | AutoEngineDescriptor;

/**
 * A nano sandbox's guest environment and network secrets: each secret's placeholder (fresh for
 * this sandbox) in the env under its name, and the same set for the host's fetch broker, which
 * alone holds the values (policy/secrets.ts). `env` cannot name a secret too (checkNanoSecrets).
 */
function nanoGuestEnv(o: NanoOptions, given?: SecretSet): { env: Record<string, string>; secrets?: SecretSet } {
  if (!o.network || o.network.secrets.length === 0) return { env: o.env };
  const secrets = given ?? new SecretSet(o.network.secrets);
  return { env: { ...o.env, ...secrets.placeholders() }, secrets };
}

const checkNanoSecrets = ({ options: o }: EngineStart<NanoOptions>) => checkSecretNames(o.env, o.network?.secrets);
const checkHeavySecrets = ({ options: o }: EngineStart<HeavyOptions>) => checkSecretNames(o.env, o.network?.secrets);

/** A heavy sandbox's secrets, one set per sandbox: the engine puts the placeholders in the guest's env; its egress proxy alone holds the values. */
function heavySecrets(o: HeavyOptions, given?: SecretSet): SecretSet | undefined {
  return o.network && o.network.secrets.length > 0 ? (given ?? new SecretSet(o.network.secrets)) : undefined;
}

function startPythonWasm({ options: o, seed, clock, mounts, secrets }: EngineStart<NanoOptions>): Promise<PythonWasmEngine> {
  const pool = o.pool ? poolFor("python", () => spawnPythonWorker([], true), "nano") : undefined;
  return PythonWasmEngine.start({ seed, clock, ...nanoGuestEnv(o, secrets), limits: o.limits, mounts, network: o.network }, pool);
}

/**
 * A nano engine wrapped for snapshots by replay (engines/replay): every restore starts the same
 * engine again from the same resolved options, seed, clock, mounts and secrets (one set, so the
 * replayed guest sees the placeholders the original saw).
 */
function replayable(start: (s: EngineStart<NanoOptions>) => Promise<ReplayableEngine>): Pick<NanoEngineDescriptor, "start" | "load"> {
  return {
    start: (s) => ReplayEngine.start(replayConfig(start, s)),
    load: async (s, saved, dir) => loadReplaySnapshot(replayConfig(start, s), saved, dir),
  };
}

function replayConfig(start: (s: EngineStart<NanoOptions>) => Promise<ReplayableEngine>, s: EngineStart<NanoOptions>): ReplayConfig {
  const o = s.options;
  const secrets = s.secrets ?? (o.network && o.network.secrets.length > 0 ? new SecretSet(o.network.secrets) : undefined);
  const fixed = { ...s, secrets };
  const rw = s.mounts.findIndex((m) => !m.readOnly);
  return {
    start: () => start(fixed),
    mountPaths: s.mounts.map((m) => m.guestPath),
    writableMount: rw >= 0 ? { index: rw, guestPath: (s.mounts[rw] as Mount).guestPath } : undefined,
    vfsBytes: o.limits.vfsBytes,
    maxEntries: o.limits.vfsFiles + 1024,
  };
}

const pythonWasm = {
  id: "python-wasm",
  tier: "nano",
  languages: ["python"] as const,
  ...replayable(startPythonWasm),
  check: checkNanoSecrets,
  prewarm: () => poolFor("python", () => spawnPythonWorker([], true), "nano")?.fill(),
  info: () => ({}),
} satisfies NanoEngineDescriptor;

const quickjsWasm = {
  id: "quickjs-wasm",
  tier: "nano",
  languages: ["javascript", "typescript"] as const,
  ...replayable(({ options: o, seed, clock, mounts, secrets }) => {
    // One pool for both languages: a worker learns at configure time whether it strips types.
    const pool = o.pool ? poolFor("javascript", () => spawnJsWorker(true), "nano") : undefined;
    const language = o.language === "typescript" ? "typescript" : "javascript";
    return QuickJsWasmEngine.start({ seed, clock, ...nanoGuestEnv(o, secrets), limits: o.limits, mounts, language, network: o.network }, pool);
  }),
  check: checkNanoSecrets,
  info: () => ({}),
} satisfies NanoEngineDescriptor;

function gvisorConfig({ options: o, seed, mounts, secrets }: EngineStart<HeavyOptions>): GvisorEngineConfig {
  return { limits: o.limits, env: o.env, seed, packages: imagePackages(o.image, o.packages), mounts: mounts.map(({ hostPath, guestPath }) => ({ hostPath, guestPath })), network: o.network, secrets: heavySecrets(o, secrets) };
}

function microvmConfig({ options: o, seed, secrets }: EngineStart<HeavyOptions>): MicrovmEngineConfig {
  return { limits: o.limits, env: o.env, seed, packages: imagePackages(o.image, o.packages), network: o.network, secrets: heavySecrets(o, secrets) };
}

const heavyGvisor = {
  id: "heavy-gvisor",
  tier: "heavy",
  backend: "gvisor" as const,
  languages: ["python"] as const,
  start: (s) => {
    const config = gvisorConfig(s);
    const spec = boxSpec(config);
    const pool = s.options.pool && s.mounts.length === 0 ? poolFor(specKey(spec), () => GvisorBox.start(spec, { warm: true }), "heavy") : undefined;
    return GvisorEngine.start(config, pool);
  },
  load: async (s, saved, dir) => loadGvisorSnapshot(gvisorConfig(s), saved, dir),
  check: checkHeavySecrets,
  // The fallback: gVisor serves every heavy configuration.
  auto: () => Promise.resolve(true),
  info: (e) => e.info ?? { backend: "gvisor" },
} satisfies HeavyEngineDescriptor;

const heavyMicrovm = {
  id: "heavy-microvm",
  tier: "heavy",
  backend: "microvm" as const,
  languages: ["python"] as const,
  refuses: { mounts: "the microVM backend shares no file system with the host; copy files in with sb.files.write" },
  start: (s) => MicrovmEngine.start(microvmConfig(s), s.options.pool),
  load: (s, saved, dir) => loadMicrovmSnapshot(microvmConfig(s), saved, dir),
  check: checkHeavySecrets,
  // Only where KVM boots it (TCG is for testing) and no mount is asked for.
  auto: async ({ options: o, mounts }) => mounts.length === 0 && (await microvmOnKvm(imagePackages(o.image, o.packages))),
  info: (e) => e.info ?? { backend: "microvm" },
} satisfies HeavyEngineDescriptor;

/**
 * Tier "auto": Python on the nano engine, moved to the heavy tier's engines (picked as for tier
 * "heavy", with autoHeavyOptions) when a cell needs them. Both sides' options are derived and
 * checked at create, so a heavy option no heavy engine serves is an error then, not at the move.
 */
function autoSides(s: EngineStart<AutoOptions>): { nano: EngineStart<NanoOptions>; heavy: EngineStart<HeavyOptions> } {
  return {
    nano: { ...s, clock: "real", options: parseOptions(optionSchemas.nano, autoNanoOptions(s.options)) as NanoOptions },
    heavy: { ...s, clock: "real", options: parseOptions(optionSchemas.heavy, autoHeavyOptions(s.options)) as HeavyOptions },
  };
}

/** Both sides of a tier "auto" sandbox and the auto engine's config (how it starts its heavy side). */
function autoConfig(s: EngineStart<AutoOptions>) {
  const sides = autoSides(s);
  // One set of secrets: the guest's placeholders stay the same across the move.
  const grant = s.options.network;
  const secrets = grant && grant.secrets.length > 0 ? new SecretSet(grant.secrets) : undefined;
  const nano = { ...sides.nano, secrets };
  const heavy = { ...sides.heavy, secrets };
  const heavyEngines = candidateEngines(heavy);
  const config = {
    startHeavy: async () => (await startEngine(heavyEngines, heavy)).engine,
    mountPaths: s.mounts.map((m) => m.guestPath),
    maxCopyEntries: s.options.limits.vfsFiles + 1024,
  };
  return { nano, heavy, config };
}

/** A tier "auto" sandbox saved on the nano tier: the nano side's replay descriptor, checked in full by loadReplaySnapshot. */
const savedAutoNanoSchema = z.strictObject({ kind: z.literal("auto-nano"), nano: z.record(z.string(), z.unknown()) });

const auto = {
  id: "auto",
  tier: "auto",
  languages: ["python"] as const,
  // The heavy side's options must fit a heavy engine now, not at the first move (e.g. mounts with backend "microvm").
  check: (s) => void candidateEngines(autoSides(s).heavy),
  // The nano side records a replayable history (engines/replay), so the sandbox can be saved on either tier.
  start: async (s) => {
    const { nano, config } = autoConfig(s);
    return AutoEngine.onNano(await ReplayEngine.start(replayConfig(startPythonWasm, nano)), config);
  },
  // On the nano tier: kind "auto-nano" around the nano side's history (checked by loadReplaySnapshot).
  // On the heavy tier: the heavy side's descriptor, read by the heavy engine that wrote it.
  load: async (s, saved, dir) => {
    const { nano, heavy, config } = autoConfig(s);
    const kind = typeof saved === "object" && saved !== null ? (saved as { kind?: unknown }).kind : undefined;
    if (kind === "auto-nano") {
      const r = savedAutoNanoSchema.safeParse(saved);
      if (!r.success) throw new SavedStateError(`the saved tier "auto" sandbox in ${dir} is not valid: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
      return AutoEngine.nanoSnapshot(loadReplaySnapshot(replayConfig(startPythonWasm, nano), r.data.nano, dir), config);
    }
    const engine = kind === "gvisor-checkpoint" ? heavyGvisor : kind === "microvm" ? heavyMicrovm : undefined;
    if (!engine) throw new SavedStateError(`the saved tier "auto" sandbox in ${dir} names no heavy backend this build has (kind ${JSON.stringify(kind)})`);
    return AutoEngine.heavySnapshot(await engine.load(heavy, saved, dir), config);
  },
  info: (e) => e.info ?? {},
} satisfies AutoEngineDescriptor;

/** Every engine, in order of preference within a tier (the "auto" backend takes the first that fits). */
const REGISTERED = [pythonWasm, quickjsWasm, heavyMicrovm, heavyGvisor, auto] as const;
export const ENGINES: readonly EngineDescriptor[] = REGISTERED;

type Registered = (typeof REGISTERED)[number];
type LanguagesOf<T extends Tier> = Extract<Registered, { tier: T }>["languages"][number];
type Backend = Extract<Registered, { tier: "heavy" }>["backend"];

/** A non-empty list of unique names, typed as the union the registry's entries spell. */
function names<N extends string>(list: readonly N[]): readonly [N, ...N[]] {
  const unique = [...new Set(list)];
  if (unique.length === 0) throw new Error("engine registry: a tier without engines");
  return unique as unknown as readonly [N, ...N[]];
}
const ofTier = <T extends Tier>(t: T) => REGISTERED.filter((e): e is Extract<Registered, { tier: T }> => e.tier === t);

/** The languages and heavy backends this build has, derived from the entries above. */
export const NANO_LANGUAGES = names<LanguagesOf<"nano">>(ofTier("nano").flatMap((e) => e.languages));
export const HEAVY_LANGUAGES = names<LanguagesOf<"heavy">>(ofTier("heavy").flatMap((e) => e.languages));
export const AUTO_LANGUAGES = names<LanguagesOf<"auto">>(ofTier("auto").flatMap((e) => e.languages));
export const LANGUAGES = names<LanguagesOf<Tier>>([...NANO_LANGUAGES, ...HEAVY_LANGUAGES]);
export const HEAVY_BACKENDS = names<Backend>(ofTier("heavy").map((e) => e.backend));

/** The sandbox option schemas, per tier, built with this build's engine names. */
export const optionSchemas = sandboxOptionSchemas({ nanoLanguages: NANO_LANGUAGES, heavyLanguages: HEAVY_LANGUAGES, heavyBackends: HEAVY_BACKENDS, autoLanguages: AUTO_LANGUAGES, heavyImages: IMAGE_PRESET_NAMES });

export function engineById(id: string): EngineDescriptor {
  const d = ENGINES.find((e) => e.id === id);
  if (!d) throw new TierUnavailableError(`no engine "${id}" in this build (engines: ${ENGINES.map((e) => e.id).join(", ")})`);
  return d;
}

const describe = (e: EngineDescriptor) => `${e.tier}${e.tier === "heavy" ? `/${e.backend}` : ""}: ${e.languages.join(", ")}`;

/**
 * The engines that may serve these options, in order of preference: those of the tier that run the
 * language (and, on the heavy tier, are the asked-for backend or any for "auto"), minus those that
 * refuse a field the options give. Throws when none is left, naming what exists.
 */
export function candidateEngines(s: EngineStart<NanoOptions | HeavyOptions | AutoOptions>): EngineDescriptor[] {
  const o = s.options;
  const backend = o.tier === "heavy" ? o.backend : undefined;
  const serving = ENGINES.filter((e) => e.tier === o.tier && e.languages.includes(o.language) && (backend === undefined || backend === "auto" || (e.tier === "heavy" && e.backend === backend)));
  if (serving.length === 0) {
    throw new TierUnavailableError(`tier "${o.tier}" with language "${o.language}"${backend ? ` and backend "${backend}"` : ""} is not available in this build; it has ${ENGINES.map(describe).join("; ")}`);
  }
  const given = (field: string) => {
    const v = (o as Record<string, unknown>)[field];
    return v !== undefined && !(Array.isArray(v) && v.length === 0);
  };
  const fits = serving.filter((e) => !Object.keys(e.refuses ?? {}).some(given));
  for (const e of fits) (e.check as ((s: EngineStart<unknown>) => void) | undefined)?.(s);
  if (fits.length > 0) return fits;
  // Every engine that runs it refuses a given field: name the first such field and who serves it.
  const refusing = serving[0] as EngineDescriptor;
  const [field, why] = Object.entries(refusing.refuses ?? {}).find(([f]) => given(f)) as [string, string];
  const servedBy = ENGINES.filter((e) => e.tier === o.tier && !(field in (e.refuses ?? {}))).flatMap((e) => (e.tier === "heavy" ? [`backend "${e.backend}"`] : e.languages));
  const where = o.tier === "heavy" ? `backend "${backend === "auto" ? refusing.tier === "heavy" && refusing.backend : backend}"` : `language "${o.language}"`;
  throw new InvalidOptionsError([{ path: field, message: `not served on the ${o.tier} tier with ${where} (${why})${servedBy.length ? `; it applies to ${servedBy.join(", ")}` : ""}` }]);
}

/** Start the first of `candidates` that fits (for "auto" on the heavy tier, the first whose `auto` says yes). */
export async function startEngine(candidates: readonly EngineDescriptor[], s: EngineStart<NanoOptions | HeavyOptions | AutoOptions>): Promise<{ engine: Engine; descriptor: EngineDescriptor }> {
  for (const d of candidates) {
    if (d.tier === "nano" && s.options.tier === "nano") return { engine: await d.start(s as EngineStart<NanoOptions>), descriptor: d };
    if (d.tier === "auto" && s.options.tier === "auto") return { engine: await d.start(s as EngineStart<AutoOptions>), descriptor: d };
    if (d.tier === "heavy" && s.options.tier === "heavy") {
      const hs = s as EngineStart<HeavyOptions>;
      if (d !== candidates.at(-1) && !(await d.auto(hs))) continue;
      return { engine: await d.start(hs), descriptor: d };
    }
  }
  throw new TierUnavailableError(`no engine of this build serves tier "${s.options.tier}" with language "${s.options.language}" (engines: ${ENGINES.map(describe).join("; ")})`);
}

/**
 * An engine snapshot read back from disk: the engine `engineId` (as SandboxSnapshot.engineId
 * named it) loads `saved` from `dir` for a sandbox started as `s`. SavedStateError when the
 * engine is not in this build, cannot load, or refuses what it reads.
 */
export async function loadEngineSnapshot(engineId: string, s: EngineStart<NanoOptions | HeavyOptions | AutoOptions>, saved: unknown, dir: string): Promise<EngineSnapshot> {
  const d = ENGINES.find((e) => e.id === engineId);
  if (!d) throw new SavedStateError(`the saved state in ${dir} is of the engine "${engineId}", which this build does not have (engines: ${ENGINES.map((e) => e.id).join(", ")})`);
  if (d.tier !== s.options.tier) throw new SavedStateError(`the saved state in ${dir} is of the ${d.tier}-tier engine "${engineId}", but its options are of tier "${s.options.tier}"`);
  if (!d.load) throw new SavedStateError(`the engine "${engineId}" cannot load saved states`);
  return (d.load as (s: EngineStart<unknown>, saved: unknown, dir: string) => Promise<EngineSnapshot>)(s, saved, dir);
}

/** Warm every engine's pool that has a single kind (called when pools are sized up). */
export function prewarmEngines(): void {
  for (const e of ENGINES) e.prewarm?.();
}
