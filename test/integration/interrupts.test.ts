// The host's interrupt can race the start of a run (a deadline or abort fired while the run
// message was still on its way): the worker must apply it when the run starts, not drop it.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { WorkerProcess } from "../../src/engines/pool/worker-process.js";
import { spawnPythonWorker } from "../../src/engines/python-wasm/runtime.js";
import { spawnJsWorker } from "../../src/engines/quickjs-wasm/runtime.js";
import { INTERRUPT_REASON, type HostMessage } from "../../src/protocol/messages.js";
import "../helpers.js";

const limits = { memoryBytes: 128 << 20, outputBytes: 1 << 20, vfsBytes: 1 << 20, vfsFiles: 100 };

async function interruptBeforeRun(w: WorkerProcess, language: "python" | "javascript", loop: string): Promise<void> {
  try {
    await w.ready;
    const configure: HostMessage = { type: "configure", id: 1, seed: 1, clock: "real", env: {}, limits, mounts: [], ...(language === "javascript" ? { language } : {}) };
    await w.request(configure);
    // A late interrupt for an older run must not touch the next one...
    w.interrupt(1, INTERRUPT_REASON.timeout);
    const ok = await w.request({ type: "run", id: 2, code: language === "python" ? "sum(range(1000))" : "[1,2,3].length" }, () => undefined);
    assert.equal(ok.type === "result" ? ok.error : "no result", null);
    // ...and one sent before its run starts takes effect when it starts.
    w.interrupt(3, INTERRUPT_REASON.timeout);
    const stopped = await w.request({ type: "run", id: 3, code: loop }, () => undefined);
    assert.equal(stopped.type, "result");
    if (stopped.type === "result") assert.equal(stopped.limitHit, "timeoutMs", JSON.stringify(stopped.error));
  } finally {
    w.kill(new Error("test over"));
  }
}

describe("interrupts that race the start of a run", () => {
  it("python: applied when the run starts; a stale one is ignored", { timeout: 60_000 }, async () => {
    await interruptBeforeRun(await spawnPythonWorker([], false), "python", "while True:\n    pass");
  });
  it("javascript: applied when the run starts; a stale one is ignored", { timeout: 60_000 }, async () => {
    await interruptBeforeRun(await spawnJsWorker(false), "javascript", "while (true) {}");
  });
});
