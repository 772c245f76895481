// Many sandboxes at once: all answer correctly, none sees another's state, none leaks a process.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import { isAlive, waitGone } from "../helpers.js";

describe("concurrency", () => {
  it("20 sandboxes at once, then no worker process is left", async () => {
    await Sandbox.configurePool({ size: 0 });
    const n = 20;
    const boxes = await Promise.all(Array.from({ length: n }, (_, i) => Sandbox.create({ seed: i, limits: { timeoutMs: 120_000 } })));
    const pids = boxes.map((b) => b.pid);
    assert.equal(new Set(pids).size, n);
    const results = await Promise.all(boxes.map((b, i) => b.runCode(`me = ${i}\nimport os\nopen('/tmp/who', 'w').write(str(me))\nme * 2`)));
    assert.deepEqual(results.map((r) => r.value), Array.from({ length: n }, (_, i) => String(i * 2)));
    const who = await Promise.all(boxes.map((b) => b.files.read("/tmp/who")));
    assert.deepEqual(who, Array.from({ length: n }, (_, i) => String(i)));
    await Promise.all(boxes.map((b) => b.kill()));
    await Promise.all(pids.map((p) => waitGone(p)));
    assert.equal(pids.filter(isAlive).length, 0);
  });
});
