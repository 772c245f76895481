// Python on the nano tier, beyond the shared conformance suite (test/conformance/: REPL, output,
// guest errors, files, limits, kill run on every engine): what is Python's or this engine's own.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FileSystemQuotaError, InvalidOptionsError, Sandbox } from "../../src/index.js";
import "../helpers.js";

describe("python: REPL semantics", () => {
  it("runs the issue's example: files, csv, trailing expression value", async () => {
    await using sb = await Sandbox.create({ language: "python", limits: { memoryMb: 128, timeoutMs: 5000 }, seed: 1 });
    await sb.files.write("/data/x.csv", "a,b\n1,2\n");
    const r = await sb.runCode("import csv\nrows = list(csv.reader(open('/data/x.csv')))\nlen(rows)");
    assert.equal(r.value, "2");
    assert.equal(r.error, undefined);
    assert.equal(r.exitCode, 0);
    assert.equal(r.seed, 1);
    assert.ok(r.durationMs >= 0);
    assert.match(r.vfsDigest, /^[0-9a-f]{64}$/);
  });

  it("a trailing semicolon hides the value, as in IPython; a def then a call gives the call's value", async () => {
    await using sb = await Sandbox.create();
    await sb.runCode("x = 41");
    assert.equal((await sb.runCode("def f(n):\n    return n * 2\nf(x)")).value, "82");
    assert.equal((await sb.runCode("x;")).value, undefined);
  });


  it("rejects bad run options with a typed error", async () => {
    await using sb = await Sandbox.create();
    await assert.rejects(sb.runCode("1", { timeoutMs: -5 }), InvalidOptionsError);
    await assert.rejects(Sandbox.create({ limits: { memoryMb: 1 } }), (e: unknown) => e instanceof InvalidOptionsError && /limits\.memoryMb/.test(e.message));
  });

  it("sees only the env it was given", async () => {
    process.env.AGENTBOX_TEST_SECRET = "hunter2";
    await using sb = await Sandbox.create({ env: { GREETING: "hi" } });
    const r = await sb.runCode("import os\nsorted(os.environ.items())");
    assert.match(r.value!, /'GREETING', 'hi'/);
    assert.doesNotMatch(r.value!, /hunter2|AGENTBOX_TEST_SECRET|PATH/);
  });
});

describe("python: files", () => {
  it("keeps sandboxes' files apart", async () => {
    await using a = await Sandbox.create();
    await using b = await Sandbox.create();
    await a.files.write("/data/secret.txt", "a's");
    assert.equal(await b.files.exists("/data/secret.txt"), false);
    assert.equal((await b.runCode("import os\nos.path.exists('/data/secret.txt')")).value, "False");
  });

  it("enforces the byte quota for host writes and guest writes", async () => {
    await using sb = await Sandbox.create({ limits: { vfsBytes: 100_000 } });
    await sb.files.write("/data/ok.bin", new Uint8Array(60_000));
    await assert.rejects(sb.files.write("/data/big.bin", new Uint8Array(60_000)), (e: unknown) => e instanceof FileSystemQuotaError && e.limit === "vfsBytes");
    const r = await sb.runCode("f = open('/data/g.bin', 'wb')\nf.write(b'x' * 50_000)\nf.close()");
    assert.equal(r.error?.name, "OSError");
    assert.equal(r.limitHit, "vfsBytes");
    await sb.files.remove("/data/ok.bin");
    const again = await sb.runCode("open('/data/g2.bin', 'wb').write(b'x' * 50_000)");
    assert.equal(again.error, undefined, "removing files gives the bytes back");
  });

  it("enforces the file-count quota", async () => {
    await using sb = await Sandbox.create({ limits: { vfsFiles: 20 } });
    const r = await sb.runCode("import os\nfor i in range(100):\n    open(f'/tmp/f{i}', 'w').close()");
    assert.equal(r.error?.name, "OSError");
    assert.equal(r.limitHit, "vfsFiles");
    assert.equal((await sb.runCode("len(os.listdir('/tmp'))")).value!.length > 0, true);
    await assert.rejects(sb.files.write("/tmp/more/x", "x"), FileSystemQuotaError);
  });

  it("lists directories in code-point order from the guest side too", async () => {
    await using sb = await Sandbox.create();
    await sb.runCode("import os\nos.makedirs('/d')\nfor n in ['b', 'B', 'a', '_', 'é', '1']:\n    open('/d/' + n, 'w').close()");
    assert.deepEqual((await sb.files.list("/d")).map((e) => e.name), ["1", "B", "_", "a", "b", "é"]);
  });
});

describe("python: lifecycle", () => {
  it("never reuses a worker: pooled sandboxes each get a fresh process", async () => {
    await Sandbox.configurePool({ size: 2, wait: true });
    const pids = new Set<number | undefined>();
    for (let i = 0; i < 4; i++) {
      await using sb = await Sandbox.create();
      assert.equal((await sb.runCode("'leak' in globals()")).value, "False");
      await sb.runCode("leak = 1");
      pids.add(sb.pid);
    }
    assert.equal(pids.size, 4);
  });

  it("an AbortSignal interrupts a run", async () => {
    await using sb = await Sandbox.create();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const r = await sb.runCode("while True: pass", { signal: ac.signal });
    assert.equal(r.error?.name, "KeyboardInterrupt");
    assert.equal((await sb.runCode("1")).value, "1");
  });
});
