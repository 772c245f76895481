// `agentbox run` of Python on the nano tier with no mounts and no network — the common one-shot:
// its worker is started here, before the CLI loads the library (~0.3 s of imports), so the two
// overlap. Only the very worker the create would start (same script, arguments and Node flags)
// is started, and the create takes it over (pool/spawn.ts); any other run, a flag this does not
// know, or a snapshot not made yet starts nothing here: the normal path decides and reports.
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { spawnEarlyWorker } from "../engines/pool/spawn.js";
import { pythonServeSpec, snapshotPath } from "../engines/python-wasm/paths.js";

/** Extensions the CLI runs as another language than Python (main.ts pickLanguage). */
const NOT_PYTHON = /\.(js|mjs|cjs|ts|mts|cts)$/i;

export function startEarly(argv: string[]): void {
  if (argv[0] !== "run") return;
  try {
    const { values, positionals } = parseArgs({
      args: argv.slice(1),
      strict: true,
      allowPositionals: true,
      options: {
        code: { type: "string", short: "c" },
        language: { type: "string" },
        tier: { type: "string" },
        memory: { type: "string" },
        timeout: { type: "string" },
        seed: { type: "string" },
        env: { type: "string", multiple: true },
        json: { type: "boolean" },
        "results-dir": { type: "string" },
      },
    });
    const file = positionals[0];
    const python = values.language === undefined ? file === undefined || !NOT_PYTHON.test(path.extname(file)) : values.language === "python";
    if (!python || (values.tier ?? "nano") !== "nano" || positionals.length > 1) return;
    const snap = snapshotPath();
    if (fs.existsSync(snap)) spawnEarlyWorker(pythonServeSpec(snap, [], false));
  } catch {
    // a flag this does not know, or no build: nothing starts early
  }
}
