// WorkerEngine.series (EngineSeries) on a real JavaScript worker: many requests sent at once and
// answered in order, a refused query answering its error while the series goes on, and a failed
// step ending the worker (the requests after it were already sent).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FileSystemError } from "../../src/index.js";
import type { EngineSeriesAnswer } from "../../src/engines/engine.js";
import { QuickJsWasmEngine } from "../../src/engines/quickjs-wasm/engine.js";
import { nanoLimitsSchema } from "../../src/policy/options.js";
import { waitGone } from "../helpers.js";

const start = () =>
  QuickJsWasmEngine.start({ language: "javascript", seed: 1, clock: "virtual", env: {}, limits: nanoLimitsSchema.parse({}), mounts: [] }, undefined);

describe("WorkerEngine.series", () => {
  it("sends runs, host file changes and queries at once; answers come in order; a refused query is an answer", async () => {
    const engine = await start();
    try {
      const answers: EngineSeriesAnswer[] = [];
      const r = await engine.series(
        [
          { kind: "run", code: "globalThis.a = 1", timeoutMs: 5000 },
          { kind: "read", path: "/home/user/nope.txt" },
          { kind: "write", path: "/home/user/x.txt", data: new TextEncoder().encode("xyz") },
          { kind: "list", path: "/home/user" },
          { kind: "run", code: "a + 1", timeoutMs: 5000 },
          { kind: "exists", path: "/home/user/x.txt" },
        ],
        (i, a) => void (answers[i] = a),
      );
      assert.deepEqual(r, { done: 6, pipelined: true });
      assert.deepEqual(answers.map((a) => a.kind), ["run", "failed", "done", "list", "run", "exists"]);
      const failed = answers[1]!;
      assert.ok(failed.kind === "failed" && failed.error instanceof FileSystemError && failed.error.errno === "ENOENT");
      const listed = answers[3]!;
      assert.ok(listed.kind === "list" && listed.entries.some((e) => e.name === "x.txt" && e.size === 3));
      const second = answers[4]!;
      assert.ok(second.kind === "run" && second.result.value === "2");
      assert.ok(answers[5]!.kind === "exists" && (answers[5] as { exists: boolean }).exists);
      assert.equal(engine.closedReason, undefined, "the engine runs on");
    } finally {
      await engine.dispose();
    }
  });

  it("a failed step throws its typed error and kills the worker; the steps after it are not answered", async () => {
    const engine = await start();
    const pid = engine.pid;
    const seen: number[] = [];
    await assert.rejects(
      engine.series(
        [
          { kind: "write", path: "/home/user/f", data: new Uint8Array([1]) },
          { kind: "write", path: "/home/user/f/under-a-file.txt", data: new Uint8Array([2]) },
          { kind: "run", code: "globalThis.after = 1", timeoutMs: 5000 },
        ],
        (i) => void seen.push(i),
      ),
      (e: unknown) => e instanceof FileSystemError && e.path === "/home/user/f/under-a-file.txt",
    );
    assert.deepEqual(seen, [0]);
    assert.match(String(engine.closedReason), /request 2 of a series failed/);
    // Killed by the series itself, not by a dispose: it goes without one.
    await waitGone(pid, 3000); // the worker is gone
    await engine.dispose();
  });

  it("a throw from `each` ends the series and the worker too", async () => {
    const engine = await start();
    await assert.rejects(
      engine.series(
        [
          { kind: "run", code: "1", timeoutMs: 5000 },
          { kind: "run", code: "2", timeoutMs: 5000 },
        ],
        () => {
          throw new RangeError("checked and refused");
        },
      ),
      RangeError,
    );
    assert.notEqual(engine.closedReason, undefined);
    await engine.dispose();
  });
});
