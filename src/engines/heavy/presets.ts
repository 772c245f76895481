// Named heavy-tier images: a preset is a list of Debian packages on top of the base image, so a
// preset's image is the image built with those packages (same recipe hash, same cache entry).
// Which Python modules a REPL imports before its first run follows from the packages, not from
// the preset's name, so any image with pandas in it starts with pandas loaded.
import { InvalidOptionsError } from "../../errors.js";

/** The presets `image` names (`agentbox image build --preset NAME`, `{ image: "data" }`). */
export const IMAGE_PRESETS = {
  /** python3, a shell and coreutils (image.ts BASE_PACKAGES). */
  base: [],
  /**
   * The data stack from Debian's packages, with fonts so charts render text, and the tools an
   * agent fetches more with (through the sandbox's network grant): pip, git, curl, CA certificates.
   */
  data: [
    "ca-certificates",
    "curl",
    "fonts-dejavu-core",
    "git",
    "python3-pip",
    "python3-bs4",
    "python3-lxml",
    "python3-matplotlib",
    "python3-networkx",
    "python3-numpy",
    "python3-openpyxl",
    "python3-pandas",
    "python3-pil",
    "python3-requests",
    "python3-scipy",
    "python3-seaborn",
    "python3-sklearn",
    "python3-statsmodels",
    "python3-sympy",
    "python3-tabulate",
    "python3-xlsxwriter",
  ],
} as const satisfies Record<string, readonly string[]>;

export type ImagePreset = keyof typeof IMAGE_PRESETS;

/**
 * The memory limit a preset's sandboxes get when the caller names none (else the tier's default).
 * The data image's REPL holds ~160 MB once numpy, pandas and matplotlib are imported; under the
 * tier's 256 MB default OpenBLAS's next buffer does not fit, and Debian's OpenBLAS then hangs in
 * numpy.linalg (a time limit, not a MemoryError) rather than failing.
 */
export const IMAGE_DEFAULT_MEMORY_MB: Readonly<Partial<Record<string, number>>> = { data: 1024 };
export const IMAGE_PRESET_NAMES = Object.keys(IMAGE_PRESETS) as [ImagePreset, ...ImagePreset[]];

/**
 * Modules a REPL imports while its sandbox warms up (pooled, snapshotted), by the package that
 * ships them: the first chart then costs a plot, not seconds of imports. Only heavy, commonly
 * used modules; written into the image (warm.json) and read by the guest agent.
 */
const WARM_IMPORTS: Readonly<Record<string, readonly string[]>> = {
  "python3-numpy": ["numpy"],
  "python3-pandas": ["pandas"],
  "python3-matplotlib": ["matplotlib", "matplotlib.pyplot"],
};

/** The packages of an image: the preset's plus the extra ones, sorted, without repeats. */
export function imagePackages(preset: string, extra: readonly string[] = []): string[] {
  const base = (IMAGE_PRESETS as Record<string, readonly string[] | undefined>)[preset];
  if (!base) throw new InvalidOptionsError([{ path: "image", message: `must be one of ${IMAGE_PRESET_NAMES.map((n) => JSON.stringify(n)).join(", ")}, got ${JSON.stringify(preset)}` }]);
  return [...new Set([...base, ...extra])].sort();
}

/** What the REPL of an image with these packages imports before its first run, in order. */
export function warmImports(packages: readonly string[]): string[] {
  const order = Object.keys(WARM_IMPORTS);
  return order.filter((p) => packages.includes(p)).flatMap((p) => WARM_IMPORTS[p]!);
}

/** The `agentbox image build` arguments that make the image with these packages. */
export function imageBuildArgs(packages: readonly string[]): string {
  const wanted = new Set(packages);
  const preset = (Object.keys(IMAGE_PRESETS) as ImagePreset[])
    .filter((p) => p !== "base" && IMAGE_PRESETS[p].every((x) => wanted.has(x)))
    .sort((a, b) => IMAGE_PRESETS[b].length - IMAGE_PRESETS[a].length)[0];
  const covered = new Set<string>(preset ? IMAGE_PRESETS[preset] : []);
  const extra = [...wanted].filter((p) => !covered.has(p)).sort();
  return [preset ? `--preset ${preset}` : "", extra.length ? `--packages ${extra.join(",")}` : ""].filter(Boolean).join(" ");
}
