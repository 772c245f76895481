// The engines the conformance suite runs against: each one's sandbox options, why it cannot run
// here, and how to tell that a closed sandbox left nothing behind. One entry per engine (and per
// guest language where an engine runs several); test/conformance/sandbox.test.ts runs every
// shared case against each.
//
// TODO: take this list from src/engines/registry.ts (the engine registry, being written) once it
// lands, so that a new engine is under test as soon as it is registered.
import assert from "node:assert/strict";
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

export const engines: Engine[] = [
  { name: "python-wasm", tier: "nano", language: "python", opts: { language: "python" }, skip: false, prepare: nothing, slow: false, trace: nanoTrace },
  { name: "quickjs-wasm (JavaScript)", tier: "nano", language: "javascript", opts: { language: "javascript" }, skip: false, prepare: nothing, slow: false, trace: nanoTrace },
  // TypeScript is the same engine after type stripping: cheap, and it checks that line numbers
  // and the REPL survive the stripping.
  { name: "quickjs-wasm (TypeScript)", tier: "nano", language: "typescript", opts: { language: "typescript" }, skip: false, prepare: nothing, slow: false, trace: nanoTrace },
  { name: "heavy-gvisor", tier: "heavy", language: "python", opts: gvisor.opts, skip: gvisor.skip, prepare: gvisor.prepare, heavy: gvisor, slow: gvisor.slow, trace: heavyTrace(gvisor) },
  { name: "heavy-microvm", tier: "heavy", language: "python", opts: microvm.opts, skip: microvm.skip, prepare: microvm.prepare, heavy: microvm, slow: microvm.slow, trace: heavyTrace(microvm) },
];
