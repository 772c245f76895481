// The engines the conformance suite runs against, taken from the engine registry
// (src/engines/registry.ts): one entry per registered engine and guest language, with what only
// the tests know (why it cannot run here, what it starts from, how to tell that a closed sandbox
// left nothing behind). A newly registered engine without a harness here fails the suite, so it
// is under test as soon as it is registered. test/conformance/sandbox.test.ts runs every shared
// case against each.
import assert from "node:assert/strict";
import { ENGINES } from "../../src/engines/registry.js";
import type { Sandbox, SandboxOptions } from "../../src/index.js";
import { waitGone } from "../helpers.js";
import { waitFor } from "../heavy.js";
import { clean, gvisor, microvm, type HeavyBackend } from "./heavy.js";
import type { Language } from "./languages.js";

export interface Engine {
  /** The name the suite's describe() carries. */
  name: string;
  tier: "nano" | "heavy";
  /** The guest language of runCode (the heavy tier runs Python). */
  language: Language;
  /** Options of the engine's sandboxes (the cases add limits or a seed where they need one). */
  opts: SandboxOptions;
  /** Pass as describe()'s `skip`: why the engine cannot run here. */
  skip: string | false;
  /** Build what its sandboxes start from, once per process. */
  prepare(): Promise<unknown>;
  /** The heavy backend, for the heavy tier's own cases. */
  heavy?: HeavyBackend;
  /** Cases marked slow on this engine run only with AGENTBOX_SLOW_TESTS=1 (the microVM under TCG). */
  slow: boolean;
  /** Note what `sb` runs on; the returned check passes once none of it is left. */
  trace(sb: Sandbox): () => Promise<void>;
}

const nanoTrace = (sb: Sandbox) => {
  const pid = sb.pid;
  assert.ok(pid, "a nano sandbox runs in a worker process");
  return () => waitGone(pid);
};

const heavyTrace = (b: HeavyBackend) => (sb: Sandbox) => {
  const res = b.resources(sb);
  return async () => {
    await waitFor(() => b.leftovers(res).processes.length === 0, 15_000);
    assert.deepEqual(b.leftovers(res), clean);
  };
};

const nothing = () => Promise.resolve();

/** What the tests add to a registered engine, by registry id. */
type Harness = Pick<Engine, "skip" | "prepare" | "heavy" | "slow" | "trace"> & { opts: SandboxOptions };

const HARNESS: Record<string, Harness> = {
  "python-wasm": { opts: {}, skip: false, prepare: nothing, slow: false, trace: nanoTrace },
  // TypeScript is the same engine after type stripping: cheap, and it checks that line numbers
  // and the REPL survive the stripping.
  "quickjs-wasm": { opts: {}, skip: false, prepare: nothing, slow: false, trace: nanoTrace },
  // Tier "auto" on its nano side: every shared case goes through the guest's heavy-tier check
  // (and must behave as on python-wasm). Its moves are test/integration/auto.test.ts's.
  auto: { opts: { tier: "auto" }, skip: false, prepare: nothing, slow: false, trace: nanoTrace },
  "heavy-gvisor": { opts: gvisor.opts, skip: gvisor.skip, prepare: gvisor.prepare, heavy: gvisor, slow: gvisor.slow, trace: heavyTrace(gvisor) },
  "heavy-microvm": { opts: microvm.opts, skip: microvm.skip, prepare: microvm.prepare, heavy: microvm, slow: microvm.slow, trace: heavyTrace(microvm) },
};

export const engines: Engine[] = ENGINES.flatMap((d) => {
  const h = HARNESS[d.id];
  if (!h) throw new Error(`engine "${d.id}" is registered but has no conformance harness in test/conformance/engines.ts`);
  return d.languages.map((language): Engine => ({
    name: d.languages.length > 1 ? `${d.id} (${language})` : d.id,
    // [auto] the shared cases need nothing of the heavy tier: they run on its nano side.
    tier: d.tier === "auto" ? "nano" : d.tier,
    language: language as Language,
    opts: { ...h.opts, language } as SandboxOptions,
    skip: h.skip,
    prepare: h.prepare,
    ...(h.heavy ? { heavy: h.heavy } : {}),
    slow: h.slow,
    trace: h.trace,
  }));
});
