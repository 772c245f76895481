// The one worker a process may start before it loads the library (the one-shot CLI's): taken over
// only by a WorkerProcess of exactly the same spec; any other spec ends it.
import assert from "node:assert/strict";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, afterEach, beforeEach, describe, it } from "node:test";
import { spawnEarlyWorker, takeEarlyWorker } from "../../src/engines/pool/spawn.js";
import { WorkerProcess } from "../../src/engines/pool/worker-process.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-early-"));
const script = path.join(dir, "echo.mjs");
fs.writeFileSync(script, "process.stdin.pipe(process.stdout);\n");
const spec = { script, args: ["serve", "a"], nodeFlags: ["--no-warnings"] };

describe("early worker", () => {
  // An early worker waits unref'd (it must not keep its process alive): the tests keep theirs.
  let keepAlive: NodeJS.Timeout | undefined;
  beforeEach(() => (keepAlive = setInterval(() => undefined, 1000)));
  afterEach(() => clearInterval(keepAlive));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("another spec (an argument or a Node flag differs) does not take it, and ends it", async () => {
    for (const other of [{ ...spec, args: ["serve", "b"] }, { ...spec, nodeFlags: [] }]) {
      const child = spawnEarlyWorker(spec)!;
      assert.ok(child.pid);
      const exited = once(child, "exit");
      assert.equal(takeEarlyWorker(other), undefined);
      const [, signal] = (await exited) as [number | null, string | null];
      assert.equal(signal, "SIGKILL");
      assert.equal(takeEarlyWorker(spec), undefined, "taken once at most");
    }
  });

  it("the same spec takes it over: a WorkerProcess gets that very process, its pipes intact", async () => {
    const child = spawnEarlyWorker(spec)!;
    assert.equal(spawnEarlyWorker(spec), undefined, "one early worker at a time");
    const w = new WorkerProcess(spec);
    try {
      assert.equal(w.pid, child.pid);
      const echoed = once(child.stdout!, "data");
      child.stdin!.write("ping");
      assert.equal(String((await echoed)[0]), "ping");
      assert.equal(takeEarlyWorker(spec), undefined);
    } finally {
      w.kill(new Error("done"));
      await w.exited$();
    }
  });

  it("one that died before it was taken is not taken", async () => {
    const child = spawnEarlyWorker(spec)!;
    child.kill("SIGKILL");
    await once(child, "exit");
    assert.equal(takeEarlyWorker(spec), undefined);
  });
});
