// Heavy tier on gVisor, for real: the shared heavy-tier conformance cases (commands, the Python
// REPL, files, limits that keep the sandbox alive, pool, snapshots, kill() leaving nothing
// behind; test/heavy-conformance.ts, also run against the microVM backend).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import type { GvisorEngine } from "../../src/engines/heavy-gvisor/engine.js";
import "../helpers.js";
import { ensureImage, leftovers, skipHeavy, waitFor } from "../heavy.js";
import { gvisor, heavyConformance } from "../heavy-conformance.js";

const engineOf = (sb: Sandbox) => (sb as unknown as { engine: GvisorEngine }).engine;
const heavy = gvisor.opts;

describe("heavy tier (gVisor)", { skip: skipHeavy }, () => {
  let sb: Sandbox;
  before(async () => {
    await ensureImage();
    sb = await Sandbox.create(heavy);
  });

  heavyConformance(gvisor, () => sb);

  it("the long-lived sandbox ends cleanly", async () => {
    const res = engineOf(sb).resources;
    await sb.kill();
    assert.ok(await waitFor(() => leftovers(res).processes.length === 0));
    assert.deepEqual(leftovers(res), { processes: [], dir: false, cgroups: [] });
  });
});
