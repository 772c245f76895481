// Heavy tier (gVisor) security corpus: the shared heavy-tier security cases (test/heavy-conformance.ts,
// also run on the microVM: what the guest must not see or reach, exhaustion it must not turn into
// host trouble, a host killed mid-command), then gVisor's own: a hostile agent channel.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { before, after, describe, it } from "node:test";
import { ProtocolError, Sandbox, WorkerCrashedError } from "../../src/index.js";
import { GvisorBox } from "../../src/engines/heavy-gvisor/box.js";
import { boxSpec, type GvisorEngine } from "../../src/engines/heavy-gvisor/engine.js";
import { limitsSchema } from "../../src/policy/options.js";
import "../helpers.js";
import { ensureImage, skipHeavy } from "../heavy.js";
import { gvisor, heavySecurity } from "../heavy-conformance.js";

const engineOf = (sb: Sandbox) => (sb as unknown as { engine: GvisorEngine }).engine;
const heavy = gvisor.opts;

describe("heavy tier security (gVisor)", { skip: skipHeavy }, () => {
  let sb: Sandbox;
  before(async () => {
    await ensureImage();
    sb = await Sandbox.create(heavy);
  });
  after(async () => {
    await sb?.kill();
  });

  it("a guest that floods the agent channel with garbage: ProtocolError, host fine, nothing left", async () => {
    const spec = { ...boxSpec({ limits: limitsSchema.parse({}), env: {}, seed: null, packages: [] }), agentArgv: ["/bin/sh", "-c", "head -c 3000000 /dev/urandom; sleep 100"] };
    const err = await GvisorBox.start(spec).then(
      async (b) => {
        await b.dispose(new Error("unexpected"));
        return undefined;
      },
      (e: unknown) => e,
    );
    assert.ok(err instanceof ProtocolError || err instanceof WorkerCrashedError, String(err));
    // A garbage frame that parses as JSON but breaks the schema.
    const frame = Buffer.from(JSON.stringify({ type: "ready", v: 1, agent: "x", python: "3", extra: true }));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(frame.length);
    const printf = [...head, ...frame].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("");
    const err2 = await GvisorBox.start({ ...spec, agentArgv: ["/bin/sh", "-c", `printf '${printf}'; sleep 100`] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err2 instanceof ProtocolError, String(err2));
    const shared = path.basename(engineOf(sb).resources.dir);
    const mine = fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith("agentbox-gvisor-") && d !== shared && fs.readFileSync(path.join(os.tmpdir(), d, "owner.pid"), "utf8") === String(process.pid));
    assert.deepEqual(mine, [], "the hostile boxes left their directories");
  });

  // Last: the shared cases include a fork bomb on the long-lived sandbox.
  heavySecurity(gvisor, () => sb);
});
