// The command line's flags in one table: each flag's value syntax, its parser (units: durations
// "500ms"/"5s"/"2m", sizes in MiB) and the sandbox option it sets, for every command that takes
// it (run, exec, mcp). Help lines are generated from the table, with the default read from the
// library's option schema, so no default is written twice. A bad value is a UsageError (exit 64)
// naming the flag, whether our parser or the library's schema refused it.
import path from "node:path";
import { parseArgs } from "node:util";
import { InvalidOptionsError, type Mount, type SandboxOptions } from "../index.js";
import { resolveSandboxOptions, TIERS } from "../index.js";

/** Bad usage: the command exits 64 with the usage text. */
export class UsageError extends Error {}

/** A duration: 500ms, 5s, 2m or plain milliseconds. */
export function parseDuration(s: string, flag = "timeout"): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new UsageError(`--${flag}: cannot read ${JSON.stringify(s)}; use e.g. 500ms, 5s, 2m, 1h`);
  const n = Number(m[1]);
  return Math.round(m[2] === "s" ? n * 1000 : m[2] === "m" ? n * 60_000 : m[2] === "h" ? n * 3600_000 : n);
}

/** HOST:GUEST or HOST:GUEST:rw (read-only unless :rw); the host path is resolved. */
export function parseMount(s: string, flag = "mount"): Mount {
  const parts = s.split(":");
  const mode = parts.length === 3 ? parts.pop() : undefined;
  if (parts.length !== 2 || !parts[0] || !parts[1] || (mode !== undefined && mode !== "rw" && mode !== "ro")) {
    throw new UsageError(`--${flag}: expected HOST:GUEST or HOST:GUEST:rw, got ${JSON.stringify(s)}`);
  }
  return { hostPath: path.resolve(parts[0]), guestPath: parts[1], readOnly: mode !== "rw" };
}

export function parseInteger(s: string, flag: string): number {
  if (!/^\d+$/.test(s)) throw new UsageError(`--${flag}: expected a non-negative integer, got ${JSON.stringify(s)}`);
  return Number(s);
}

function parsePositive(s: string, flag: string): number {
  const n = Number(s);
  if (!/^\d+(\.\d+)?$/.test(s) || !(n > 0)) throw new UsageError(`--${flag}: expected a positive number, got ${JSON.stringify(s)}`);
  return n;
}

function parseNameValue(s: string, flag: string): [string, string] {
  const i = s.indexOf("=");
  if (i <= 0) throw new UsageError(`--${flag}: expected NAME=VALUE, got ${JSON.stringify(s)}`);
  return [s.slice(0, i), s.slice(i + 1)];
}

const oneOf =
  <T extends string>(...allowed: T[]) =>
  (s: string, flag: string): T => {
    if (!(allowed as string[]).includes(s)) throw new UsageError(`--${flag}: expected one of ${allowed.join(", ")}, got ${JSON.stringify(s)}`);
    return s as T;
  };

const formatDuration = (ms: number) => (ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);

interface FlagSpec {
  /** The value's placeholder in help; none: a boolean flag. */
  readonly value?: string;
  readonly short?: string;
  /** Repeatable: every value is parsed, then `collect` turns the list into the option's value. */
  readonly multiple?: true;
  /** Help text; a second line and more are indented under the first. */
  readonly help: string;
  /** The sandbox option the flag sets (dotted path); help shows that option's default from the schema. */
  readonly option?: string;
  readonly parse?: (s: string, flag: string) => unknown;
  readonly collect?: (values: unknown[]) => unknown;
  /** How the default reads in help (default: as is). */
  readonly showDefault?: (v: unknown) => string;
}

/** Every flag of run, exec and mcp. A command lists the ones it takes. */
export const FLAGS = {
  code: { value: "CODE", short: "c", help: "code to run instead of a file" },
  language: { value: "LANG", help: "python, javascript or typescript (default: from the file's extension,\n.py / .js .mjs .cjs / .ts .mts .cts; python for -c)" },
  tier: {
    value: "TIER",
    help:
      "nano (WebAssembly), heavy (Debian userland in gVisor or a microVM;\nrun `agentbox image build` once first) or auto (Python: nano until\nthe code needs heavy, e.g. import pandas or subprocess, then heavy)",
    option: "tier",
    parse: oneOf(...TIERS),
  },
  backend: {
    value: "B",
    help: "heavy tier (and auto once on it): auto (the microVM where KVM boots it, else gVisor), gvisor or\nmicrovm (QEMU; software emulation where KVM is unusable: slow)",
    option: "backend",
    parse: oneOf("auto", "gvisor", "microvm"),
  },
  memory: { value: "MB", help: "memory limit in MiB", option: "limits.memoryMb", parse: parseInteger },
  timeout: { value: "DURATION", help: "time limit of a run or command: 500ms, 5s, 2m or plain milliseconds", option: "limits.timeoutMs", parse: parseDuration, showDefault: (v) => formatDuration(v as number) },
  cpus: { value: "N", help: "heavy tier: CPU quota, e.g. 0.5 or 2", option: "limits.cpus", parse: parsePositive },
  disk: { value: "MB", help: "heavy tier: size of /home/user and of /tmp in MiB", option: "limits.diskMb", parse: parseInteger },
  image: {
    value: "NAME",
    help: "heavy tier: base, or data (numpy, pandas, matplotlib, scipy, scikit-learn, ...;\nbuilt with `image build --preset data`)",
    option: "image",
    parse: oneOf("base", "data"),
  },
  packages: {
    value: "A,B",
    help: "heavy tier: extra Debian packages on top of the image (built with\n`image build [--preset NAME] --packages A,B`)",
    option: "packages",
    parse: (s: string) => s.split(",").map((p) => p.trim()).filter(Boolean),
    showDefault: () => "none",
  },
  seed: { value: "N", help: "seed for randomness and the virtual clock (reproducible runs)", option: "seed", parse: parseInteger },
  mount: { value: "HOST:GUEST[:rw]", multiple: true, help: "make a host directory visible (read-only unless :rw); repeatable", option: "mounts", parse: parseMount },
  env: { value: "NAME=VALUE", multiple: true, help: "environment variable for the guest; repeatable", option: "env", parse: parseNameValue, collect: (kv) => Object.fromEntries(kv as [string, string][]) },
  "allow-net": {
    value: "HOST",
    multiple: true,
    help: "give the guest network access to HOST ([scheme://]host[:port], *.domain for\nsubdomains); repeatable. Nano: JavaScript fetch(), Python urllib and http.client;\nheavy: through the sandbox's proxy (curl, pip, git, requests...). No network\nwithout it. A name that resolves to a loopback or private address also needs that\naddress (or localhost).",
    option: "network.allow",
  },
  "deny-net": {
    value: "HOST",
    multiple: true,
    help: "refuse HOST even where --allow-net allows it (no port: every port; an address\nalso refuses names resolving to it); repeatable",
    option: "network.deny",
  },
  "results-dir": {
    value: "DIR",
    help: "write each rich result (display(), a rich final value) to DIR as result-N.png,\n.jpg, .svg, .pdf, .html, .md, .json or .txt (default: a fresh temporary directory,\nmade when the run has results)",
  },
  expose: {
    value: "PORT",
    multiple: true,
    help: "heavy tier: forward 127.0.0.1:<a free port> on this machine to PORT in the sandbox\nand print its URL to stderr; repeatable. Without --timeout the command may then\nrun up to 24 hours (a server: until it exits or Ctrl-C)",
  },
  json: { help: "print one JSON object with the whole result" },
  help: { short: "h", help: "this help" },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

/** The library's defaults, read once from its per-tier schemas (a limit belongs to one tier or both). */
const DEFAULTS = (() => {
  const nano = resolveSandboxOptions({}).options as unknown as Record<string, unknown>;
  const heavy = resolveSandboxOptions({ tier: "heavy" }).options as unknown as Record<string, unknown>;
  return { ...heavy, ...nano, limits: { ...(heavy.limits as object), ...(nano.limits as object) } } as Record<string, unknown>;
})();

function at(obj: Record<string, unknown>, dotted: string): unknown {
  let v: unknown = obj;
  for (const k of dotted.split(".")) v = v === undefined || v === null ? undefined : (v as Record<string, unknown>)[k];
  return v;
}

function setAt(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const keys = dotted.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
  o[keys.at(-1)!] = value;
}

/** The default a flag's option has in the library's schema, as help shows it; undefined when none worth showing. */
export function flagDefault(name: FlagName): string | undefined {
  const f: FlagSpec = FLAGS[name];
  if (!f.option || f.multiple) return undefined;
  const v = at(DEFAULTS, f.option);
  if (v === undefined) return undefined;
  return f.showDefault ? f.showDefault(v) : String(v);
}

/** Help lines for `names`, aligned as the usage texts are; `extra` overrides a flag's text for one command. */
export function flagHelp(names: readonly FlagName[], extra: Partial<Record<FlagName, string>> = {}): string {
  return names
    .map((name) => {
      const f: FlagSpec = FLAGS[name];
      const left = `${f.short ? `-${f.short}, ` : ""}--${name}${f.value ? ` ${f.value}` : ""}`;
      const def = flagDefault(name);
      const text = (extra[name] ?? f.help) + (def !== undefined ? ` (default ${def})` : "");
      const [first, ...more] = text.split("\n");
      return [`  ${left.length >= 22 ? `${left}  ` : left.padEnd(23)}${first}`, ...more.map((l) => `${" ".repeat(25)}${l}`)].join("\n");
    })
    .join("\n");
}

export interface ReadFlags {
  /** Values as given, by flag name (strings, string lists, booleans). */
  raw: Record<string, string | boolean | (string | boolean)[] | undefined>;
  /** Values of flags without an option (code, language, json, help). */
  values: { [K in FlagName]?: K extends "json" | "help" ? boolean : string };
  positionals: string[];
}

/** Read `argv` taking only the flags in `names`; an unknown flag or a missing value is a UsageError. Values are not parsed yet. */
export function readFlags(argv: string[], names: readonly FlagName[], allowPositionals = true): ReadFlags {
  const spec: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const name of names) {
    const f: FlagSpec = FLAGS[name];
    spec[name] = { type: f.value ? "string" : "boolean", ...(f.short ? { short: f.short } : {}), ...(f.multiple ? { multiple: true } : {}) };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, allowPositionals, strict: true, options: spec });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const values: Record<string, unknown> = {};
  for (const name of names) if (!(FLAGS[name] as FlagSpec).option && parsed.values[name] !== undefined) values[name] = parsed.values[name];
  return { raw: parsed.values, values: values as ReadFlags["values"], positionals: parsed.positionals };
}

/**
 * The sandbox options the flags given set (only those: the library fills in the rest), each
 * value through its flag's parser; a bad value is a UsageError naming the flag.
 */
export function flagOptions(read: ReadFlags, names: readonly FlagName[]): SandboxOptions {
  const options: Record<string, unknown> = {};
  for (const name of names) {
    const f: FlagSpec = FLAGS[name];
    const raw = read.raw[name];
    if (raw === undefined || !f.option) continue;
    const one = (s: string) => (f.parse ? f.parse(s, name) : s);
    const v = f.multiple ? (f.collect ?? ((x: unknown[]) => x))((raw as string[]).map(one)) : one(raw as string);
    setAt(options, f.option, v);
  }
  return options as SandboxOptions;
}

/**
 * An InvalidOptionsError from the library reworded for the command line: each issue under an
 * option a flag sets names that flag ("--memory (limits.memoryMb): ..."), so the user knows what
 * to change. Same class and code (INVALID_OPTIONS, exit 64).
 */
export function flagError(e: InvalidOptionsError, names: readonly FlagName[]): InvalidOptionsError {
  const byOption: [string, FlagName][] = [];
  for (const n of names) {
    const f: FlagSpec = FLAGS[n];
    if (f.option) byOption.push([f.option, n]);
  }
  return new InvalidOptionsError(
    e.issues.map((i) => {
      const hit = byOption.find(([o]) => i.path === o || i.path.startsWith(`${o}.`));
      return hit ? { path: `--${hit[1]} (${i.path})`, message: i.message } : i;
    }),
  );
}
