// Heavy tier on gVisor, for real: the shared heavy-tier conformance cases (commands, the Python
// REPL, files, limits that keep the sandbox alive, pool, snapshots, kill() leaving nothing
// behind; test/heavy-conformance.ts, also run against the microVM backend).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import { InvalidOptionsError, Sandbox } from "../../src/index.js";
import { DEFAULT_HEAVY_POOL_SIZE, poolSizes } from "../../src/engines/pools.js";
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

  it("heavy pools are sized apart from nano ones (configurePool({ heavy }))", async () => {
    try {
      await Sandbox.configurePool({ size: 0, heavy: 1 });
      const a = await Sandbox.create({ ...heavy, pool: true }); // makes the heavy pool, size 1
      const kinds = Object.entries(poolSizes());
      assert.deepEqual(kinds.map(([k, n]) => [k.split(":")[0], n]), [["gvisor", 1]], "only the heavy pool exists");
      await a.kill();
      await Sandbox.configurePool({ size: 3 }); // heavy not given: min(size, DEFAULT_HEAVY_POOL_SIZE); the Python pool starts
      const sizes = () => Object.entries(poolSizes()).map(([k, n]) => `${k.split(":")[0]}=${n}`).sort();
      assert.deepEqual(sizes(), [`gvisor=${DEFAULT_HEAVY_POOL_SIZE}`, "python=3"]);
      await Sandbox.configurePool({ size: 3, heavy: 0 }); // closes the heavy pool only
      assert.deepEqual(sizes(), ["python=3"]);
      await assert.rejects(Sandbox.configurePool({ heavy: -1 }), (e: unknown) => e instanceof InvalidOptionsError && /heavy/.test(e.message));
    } finally {
      await Sandbox.shutdownPool();
      await Sandbox.configurePool({ size: 0 });
    }
  });

  it("the long-lived sandbox ends cleanly", async () => {
    const res = engineOf(sb).resources;
    await sb.kill();
    assert.ok(await waitFor(() => leftovers(res).processes.length === 0));
    assert.deepEqual(leftovers(res), { processes: [], dir: false, cgroups: [] });
  });
});
