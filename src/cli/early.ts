// `agentbox run` of Python on the nano tier with no mounts and no network — the common one-shot:
// its worker is started here, before the CLI loads the library (~0.3 s of imports), so the two
// overlap. Only the very worker the create would start (same script, arguments and Node flags)
// is started, and the create takes it over (pool/spawn.ts); any other run, a flag this does not
// know, or a snapshot not made yet starts nothing here: the normal path decides and reports.
import fs from "node:fs";
import { parseArgs } from "node:util";
import { spawnEarlyWorker } from "../engines/pool/spawn.js";
import { pythonServeSpec, snapshotPath } from "../engines/python-wasm/paths.js";
import { languageOfFile } from "./languages.js";

export function startEarly(argv: string[]): void {
  if (argv[0] !== "run") return;
  try {
    const { values, positionals } = parseArgs({
      args: argv.slice(1),
      strict: true,
      allowPositionals: true,
      // Only flags that leave the worker as create would start it (mounts and network change
      // its Node flags; the heavy tier is another engine): any other flag fails this parse.
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
    const language = values.language ?? languageOfFile(positionals[0]);
    if (language !== "python" || (values.tier ?? "nano") !== "nano" || positionals.length > 1) return;
    const snap = snapshotPath();
    if (fs.existsSync(snap)) spawnEarlyWorker(pythonServeSpec(snap, [], false));
  } catch {
    // a flag this does not know, or no build: nothing starts early
  }
}
