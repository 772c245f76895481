import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FileSystemError, FileSystemQuotaError, InvalidOptionsError, Sandbox, SandboxClosedError, TimeoutError } from "../../src/index.js";
import { checkGuestPathRule, checkMakeDirOverFile, isAlive, waitGone } from "../helpers.js";

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

  it("keeps globals across runs and returns repr of the last expression", async () => {
    await using sb = await Sandbox.create();
    assert.equal((await sb.runCode("x = 41")).value, undefined);
    assert.equal((await sb.runCode("x + 1")).value, "42");
    assert.equal((await sb.runCode("'a' * 3")).value, "'aaa'");
    assert.equal((await sb.runCode("def f(n):\n    return n * 2\nf(x)")).value, "82");
    assert.equal((await sb.runCode("None")).value, undefined);
    assert.equal((await sb.runCode("x;")).value, undefined, "trailing semicolon hides the value, as in IPython");
  });

  it("captures stdout and stderr separately and streams them", async () => {
    await using sb = await Sandbox.create();
    const chunks: string[] = [];
    const errs: string[] = [];
    const r = await sb.runCode("import sys\nprint('out1')\nprint('err1', file=sys.stderr)\nprint('out2')", {
      onStdout: (c) => chunks.push(c),
      onStderr: (c) => errs.push(c),
    });
    assert.equal(r.stdout, "out1\nout2\n");
    assert.equal(r.stderr, "err1\n");
    assert.equal(chunks.join(""), r.stdout);
    assert.equal(errs.join(""), r.stderr);
  });

  it("streams output while the guest is still running, even when it then blocks", async () => {
    await using sb = await Sandbox.create({ clock: "real" });
    const arrivals: { at: number; text: string }[] = [];
    const r = await sb.runCode("import time\nprint('before')\nprint('also before')\ntime.sleep(0.6)\nprint('after')", {
      onStdout: (text) => arrivals.push({ at: performance.now(), text }),
    });
    const endedAt = performance.now();
    assert.equal(r.stdout, "before\nalso before\nafter\n");
    // Everything printed before the sleep reached the caller while the guest slept.
    let seen = "";
    let lastBeforeSleep = 0;
    for (const a of arrivals) {
      if (seen.length < "before\nalso before\n".length) lastBeforeSleep = a.at;
      seen += a.text;
    }
    assert.ok(endedAt - lastBeforeSleep > 300, `pre-sleep output arrived only ${Math.round(endedAt - lastBeforeSleep)} ms before the end`);
  });

  it("returns a guest exception as a result with name, message and a traceback of the user's code", async () => {
    await using sb = await Sandbox.create();
    const r = await sb.runCode("def g():\n    raise ValueError('bad value')\ng()");
    assert.equal(r.exitCode, 1);
    assert.equal(r.error?.name, "ValueError");
    assert.equal(r.error?.message, "bad value");
    assert.match(r.error!.traceback, /File "<cell-\d+>", line 2, in g/);
    assert.doesNotMatch(r.error!.traceback, /_pyodide|_agentbox|eval_code/);
    const s = await sb.runCode("def (:");
    assert.equal(s.error?.name, "SyntaxError");
    assert.equal((await sb.runCode("1 + 1")).value, "2", "the sandbox lives on after guest errors");
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
  it("writes, reads, lists (sorted), checks and removes", async () => {
    await using sb = await Sandbox.create();
    await sb.files.write("/data/b.txt", "B");
    await sb.files.write("/data/a.txt", new Uint8Array([0, 1, 2, 255]));
    await sb.files.write("/data/Z/inner.txt", "z");
    assert.deepEqual((await sb.files.list("/data")).map((e) => [e.name, e.type]), [["Z", "dir"], ["a.txt", "file"], ["b.txt", "file"]]);
    assert.deepEqual([...(await sb.files.read("/data/a.txt", { format: "bytes" }))], [0, 1, 2, 255]);
    assert.equal(await sb.files.read("/data/b.txt"), "B");
    assert.equal(await sb.files.exists("/data/b.txt"), true);
    await sb.files.remove("/data/b.txt");
    assert.equal(await sb.files.exists("/data/b.txt"), false);
    await assert.rejects(sb.files.read("/data/b.txt"), (e: unknown) => e instanceof FileSystemError && e.errno === "ENOENT");
    await sb.files.remove("/data/Z");
    assert.equal(await sb.files.exists("/data/Z/inner.txt"), false);
  });

  it("makeDir is mkdir -p: fine over a directory, FileSystemError EEXIST over a file", async () => {
    await using sb = await Sandbox.create();
    await checkMakeDirOverFile(sb);
    const guest = await sb.runCode("import os\ntry:\n    os.makedirs('/tmp/mk/f.txt', exist_ok=True)\nexcept OSError as e:\n    r = type(e).__name__\nr");
    assert.equal(guest.value, "'FileExistsError'", "the guest's os.makedirs agrees");
  });

  it("refuses relative paths, .. segments and NUL with InvalidOptionsError naming the path", async () => {
    await using sb = await Sandbox.create();
    await checkGuestPathRule(sb);
  });

  it("shares one file system between host and guest", async () => {
    await using sb = await Sandbox.create();
    await sb.runCode("import os\nos.makedirs('/out', exist_ok=True)\nopen('/out/r.txt', 'w').write('from guest')");
    assert.equal(await sb.files.read("/out/r.txt"), "from guest");
    await sb.files.write("/in/q.txt", "from host");
    assert.equal((await sb.runCode("open('/in/q.txt').read()")).value, "'from host'");
  });

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
  it("kill is idempotent, ends the worker and closes the sandbox", async () => {
    const sb = await Sandbox.create();
    const pid = sb.pid;
    assert.ok(isAlive(pid));
    await sb.kill();
    await sb.kill();
    await waitGone(pid);
    assert.equal(sb.closed, true);
    await assert.rejects(sb.runCode("1"), SandboxClosedError);
    await assert.rejects(sb.files.read("/x"), SandboxClosedError);
  });

  it("await using disposes the worker", async () => {
    let pid: number | undefined;
    {
      await using sb = await Sandbox.create();
      pid = sb.pid;
      assert.ok(isAlive(pid));
    }
    await waitGone(pid);
  });

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

  it("serialises concurrent operations on one sandbox", async () => {
    await using sb = await Sandbox.create();
    await sb.runCode("n = 0");
    const all = await Promise.all(Array.from({ length: 10 }, () => sb.runCode("n += 1\nn")));
    assert.deepEqual(all.map((r) => r.value), ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
  });

  it("a timeout that is not caught leaves the sandbox usable", async () => {
    await using sb = await Sandbox.create({ limits: { timeoutMs: 300 } });
    const r = await sb.runCode("while True: pass");
    assert.equal(r.limitHit, "timeoutMs");
    assert.equal(r.error?.name, "KeyboardInterrupt");
    assert.equal((await sb.runCode("2 * 21")).value, "42");
  });

  it("a run that ignores the interrupt is killed: TimeoutError, sandbox closed", async () => {
    const sb = await Sandbox.create({ limits: { timeoutMs: 300, graceMs: 200 } });
    const pid = sb.pid;
    await assert.rejects(
      sb.runCode("print('before')\nimport sys\nprint('warn', file=sys.stderr)\nwhile True:\n    try:\n        while True: pass\n    except BaseException:\n        pass"),
      (e: unknown) =>
        e instanceof TimeoutError && e.limit === "timeoutMs" && e.value === 300 && JSON.stringify(e.result) === JSON.stringify({ stdout: "before\n", stderr: "warn\n", exitCode: 137, limitHit: "timeoutMs" }),
    );
    assert.equal(sb.closed, true);
    await assert.rejects(sb.runCode("1"), SandboxClosedError);
    await waitGone(pid);
  });

  it("runCode's own timeoutMs overrides the sandbox's", async () => {
    await using sb = await Sandbox.create({ limits: { timeoutMs: 60_000 } });
    const r = await sb.runCode("while True: pass", { timeoutMs: 200 });
    assert.equal(r.limitHit, "timeoutMs");
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
