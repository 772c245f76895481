// The behaviour every engine shares, written once: REPL state, output capture and streaming,
// guest errors, files, limits and their errors, determinism where the tier promises it, kill and
// close. The guest code comes from ./languages.ts; what a tier does differently is a labelled
// branch ([nano], [heavy]) inside the case, not another copy of it.
import assert from "node:assert/strict";
import { it } from "node:test";
import { FileSystemError, InvalidOptionsError, Sandbox, SandboxClosedError, TimeoutError, type RunResult } from "../../src/index.js";
import { checkGuestPathRule, checkMakeDirOverFile } from "../helpers.js";
import type { Engine } from "./engines.js";
import { snippets, type ExpectedError } from "./languages.js";

/** limits.outputBytes of the shared sandbox (small, so the flood case is quick). */
export const OUTPUT_CAP = 10_000;


/** limits.memoryMb of a nano engine's shared sandbox: enough for every case, small enough that the JS memory bomb ends soon. */
const NANO_MEMORY_MB = 128;


/** Options of the engine's long-lived sandbox the shared cases run on. [heavy] its memory stays
 *  the backend's own (on the microVM, another size would be another base snapshot). */
export function sharedOptions(e: Engine) {
  const memory = e.tier === "nano" ? { memoryMb: NANO_MEMORY_MB } : {};
  return { ...e.opts, limits: { ...e.opts.limits, ...memory, outputBytes: OUTPUT_CAP } };
}

function assertError(r: RunResult, want: ExpectedError, what: string): void {
  assert.ok(r.error, `${what}: no error (${JSON.stringify(r)})`);
  if (want.name) assert.equal(r.error.name, want.name, `${what}: ${JSON.stringify(r.error)}`);
  if (typeof want.message === "string") assert.equal(r.error.message, want.message, what);
  else if (want.message) assert.match(r.error.message, want.message, what);
}

export function sharedConformance(e: Engine, get: () => Sandbox): void {
  const s = snippets[e.language];
  const tmp = "/tmp/conf";

  it("REPL: globals persist across runs; the trailing expression is the value", async () => {
    const sb = get();
    const set = await sb.runCode(s.setX);
    assert.equal(set.error, undefined, set.error?.traceback);
    assert.equal(set.value, undefined);
    const r = await sb.runCode(s.useX);
    assert.equal(r.value, "42");
    assert.equal(r.exitCode, 0);
    assert.equal(r.error, undefined);
    assert.ok(r.durationMs >= 0);
    assert.match(r.vfsDigest, /^[0-9a-f]{64}$/);
    assert.equal((await sb.runCode(s.strValue)).value, s.str("aaa"));
    assert.equal((await sb.runCode(s.noValue)).value, undefined);
  });

  it("stdout and stderr: captured apart, streamed in order to onStdout/onStderr", async () => {
    const sb = get();
    const out: string[] = [];
    const err: string[] = [];
    const r = await sb.runCode(s.outErr, { onStdout: (c) => out.push(c), onStderr: (c) => err.push(c) });
    assert.equal(r.stdout, "out1\nout2\n");
    assert.equal(r.stderr, "err1\n");
    assert.equal(out.join(""), r.stdout);
    assert.equal(err.join(""), r.stderr);
  });

  it("streaming: output reaches onStdout while the guest is still running", async () => {
    const sb = get();
    let firstAt = 0;
    const r = await sb.runCode(s.printSleepPrint, { onStdout: () => (firstAt ||= performance.now()) });
    const endedAt = performance.now();
    assert.equal(r.stdout, "before\nafter\n");
    assert.ok(firstAt > 0 && endedAt - firstAt > 300, `"before" arrived only ${Math.round(endedAt - firstAt)} ms before the end`);
  });

  it("streaming: every line written before a busy loop reaches onStdout while the loop runs", async () => {
    const sb = get();
    let seen = "";
    let allAt = 0;
    const r = await sb.runCode(s.printPrintLoop, {
      timeoutMs: 1500,
      onStdout: (c) => {
        seen += c;
        if (seen === "a\nb\n") allAt = performance.now();
      },
    });
    const endedAt = performance.now();
    assert.equal(r.limitHit, "timeoutMs");
    assert.equal(r.stdout, "a\nb\n");
    assert.ok(allAt > 0 && endedAt - allAt > 700, `"b" arrived only ${Math.round(endedAt - allAt)} ms before the end`);
  });

  it("guest errors are results: name, message, a traceback of the user's code; the sandbox lives on", async () => {
    const sb = get();
    const r = await sb.runCode(s.raise);
    assert.equal(r.exitCode, 1);
    assertError(r, s.raised, "raise");
    assert.equal(r.error?.message, s.raised.message);
    assert.match(r.error!.traceback, s.tracebackAt);
    assert.doesNotMatch(r.error!.traceback, s.tracebackHides);
    const syn = await sb.runCode(s.syntaxError);
    assert.equal(syn.error?.name, "SyntaxError");
    assert.equal(syn.exitCode, 1);
    assert.equal((await sb.runCode(s.useX)).value, "42", "state survives guest errors");
  });

  it("concurrent runCode calls on one sandbox are serialised", async () => {
    const sb = get();
    await sb.runCode(s.counterInit);
    const all = await Promise.all(Array.from({ length: 5 }, () => sb.runCode(s.incr)));
    assert.deepEqual(all.map((r) => r.value), ["1", "2", "3", "4", "5"]);
  });

  it("files: write, read, list in code-point order, exists, remove; bytes round-trip; one file system with the guest", async () => {
    const sb = get();
    const bytes = new Uint8Array(256).map((_, i) => i);
    await sb.files.write(`${tmp}/d/bin.dat`, bytes);
    await sb.files.write(`${tmp}/d/b.txt`, "héllo");
    await sb.files.write(`${tmp}/d/B.txt`, "x");
    await sb.files.write(`${tmp}/d/_.txt`, "x");
    await sb.files.makeDir(`${tmp}/d/sub`);
    await sb.files.write(`${tmp}/d/Z/inner.txt`, "z");
    const listed = (await sb.files.list(`${tmp}/d`)).map((x) => `${x.name}:${x.type}`);
    assert.deepEqual(listed, ["B.txt:file", "Z:dir", "_.txt:file", "b.txt:file", "bin.dat:file", "sub:dir"]);
    assert.deepEqual(await sb.files.read(`${tmp}/d/bin.dat`, { format: "bytes" }), bytes);
    assert.equal(await sb.files.read(`${tmp}/d/b.txt`), "héllo");
    assert.equal((await sb.runCode(s.readText(`${tmp}/d/b.txt`))).value, s.str("héllo"), "the guest reads what the host wrote");
    const w = await sb.runCode(s.writeText(`${tmp}/d/g.txt`, "from guest"));
    assert.equal(w.error, undefined, w.error?.traceback);
    assert.equal(await sb.files.read(`${tmp}/d/g.txt`), "from guest", "the host reads what the guest wrote");
    assert.equal(await sb.files.exists(`${tmp}/d/b.txt`), true);
    await sb.files.remove(`${tmp}/d/b.txt`);
    assert.equal(await sb.files.exists(`${tmp}/d/b.txt`), false);
    await sb.files.remove(`${tmp}/d/Z`);
    assert.equal(await sb.files.exists(`${tmp}/d/Z/inner.txt`), false);
    await sb.files.remove(`${tmp}/d`);
    assert.equal(await sb.files.exists(`${tmp}/d`), false);
  });

  it("files errors: ENOENT, EEXIST for makeDir over a file (the guest agrees), `..` refused with InvalidOptionsError", async () => {
    const sb = get();
    await assert.rejects(sb.files.read(`${tmp}/nope.txt`), (x: unknown) => x instanceof FileSystemError && x.errno === "ENOENT");
    await checkMakeDirOverFile(sb);
    assert.equal((await sb.runCode(s.mkdirOverFile("/tmp/mk/f.txt"))).value, s.mkdirOverFileValue, "the guest's own mkdir -p agrees");
    await checkGuestPathRule(sb);
    await assert.rejects(sb.files.exists(`${tmp}/../tmp`), InvalidOptionsError);
  });

  it("time limit: an interrupt ends the run (limitHit timeoutMs); the sandbox and its state live on", async () => {
    const sb = get();
    await sb.runCode(s.setX);
    const t0 = performance.now();
    const r = await sb.runCode(s.busyLoop, { timeoutMs: 300 });
    assert.equal(r.limitHit, "timeoutMs");
    assertError(r, s.interrupted, "busy loop");
    assert.ok(performance.now() - t0 < 10_000);
    assert.equal(sb.closed, false);
    assert.equal((await sb.runCode(s.useX)).value, "42");
  });

  it("output limit: a flood is cut at limits.outputBytes (limitHit outputBytes); the sandbox lives on", async () => {
    const sb = get();
    const r = await sb.runCode(s.flood, { timeoutMs: 20_000 });
    assert.equal(r.limitHit, "outputBytes");
    const n = Buffer.byteLength(r.stdout);
    assert.ok(n <= OUTPUT_CAP && n > OUTPUT_CAP * 0.9, `stdout has ${n} bytes, cap ${OUTPUT_CAP}`);
    assert.ok(r.stdout.startsWith("y".repeat(100)));
    assert.equal((await sb.runCode(s.useX)).value, "42");
  });

  it("output limit: a huge trailing value counts against limits.outputBytes", async () => {
    const sb = get();
    const big = await sb.runCode(s.hugeValue);
    assert.equal(big.limitHit, "outputBytes", `value of ${big.value?.length} characters, limitHit ${big.limitHit}`);
    assert.ok(big.value === undefined || big.value.length <= OUTPUT_CAP, `value of ${big.value?.length} characters`);
    assert.equal((await sb.runCode(s.useX)).value, "42");
  });

  it("memory: past limits.memoryMb the guest gets its out-of-memory error (limitHit memoryMb); the sandbox lives on", async () => {
    const sb = get();
    const r = await sb.runCode(s.memoryBomb, { timeoutMs: 30_000 });
    assertError(r, s.outOfMemory, "memory bomb");
    assert.equal(r.limitHit, "memoryMb");
    assert.equal(sb.closed, false);
    const after = await sb.runCode(s.memoryFreed);
    assert.equal(after.error, undefined, after.error?.traceback);
    assert.equal((await sb.runCode(s.useX)).value, "42");
  });

  it("a run that ignores the interrupt is stopped hard: TimeoutError keeps its output on err.result", async () => {
    // [nano] the worker is killed and the sandbox closed; [heavy] the REPL is restarted and the sandbox lives on.
    // Long enough that [nano JS] "before" reaches the host (which then stops the worker) before the
    // interrupt would have ended the run, on a loaded machine too.
    const timeoutMs = 1000;
    const own = e.tier === "nano" ? await Sandbox.create({ ...e.opts, limits: { timeoutMs, graceMs: 200 } }) : undefined;
    const sb = own ?? get();
    const gone = own ? e.trace(own) : undefined;
    const pid = sb.pid;
    // [nano JS] QuickJS always honours the interrupt: a stuck worker is simulated by stopping it
    // once its first line has arrived. The whole process is stopped then, so its "warn" (written
    // after "before", still waiting in the worker) cannot be sent: the run keeps only its stdout.
    const stoppedJs = e.tier === "nano" && e.language !== "python";
    const stop = stoppedJs ? () => process.kill(pid!, "SIGSTOP") : () => {};
    try {
      await sb.runCode(s.setX);
      await assert.rejects(sb.runCode(s.stubborn, { timeoutMs, onStdout: stop }), (x: unknown) => {
        assert.ok(x instanceof TimeoutError, String(x));
        assert.equal(x.limit, "timeoutMs");
        assert.equal(x.value, timeoutMs);
        assert.equal(x.result?.stdout, "before\n");
        if (!stoppedJs) assert.equal(x.result?.stderr, "warn\n");
        assert.equal(x.result?.limitHit, "timeoutMs");
        if (e.tier === "nano") assert.equal(x.result?.exitCode, 137);
        return true;
      });
      if (own) {
        assert.equal(own.closed, true, "[nano] the worker was killed");
        await assert.rejects(own.runCode("1"), SandboxClosedError);
        await gone!();
      } else {
        assert.equal(sb.closed, false, "[heavy] the sandbox lives on");
        const fresh = await sb.runCode(s.useX);
        assert.equal(fresh.error?.name, "NameError", "[heavy] the REPL was restarted");
        assert.equal((await sb.runCode("1 + 1")).value, "2");
      }
    } finally {
      await own?.kill();
    }
  });

  it("determinism: the same seed gives the same results and vfsDigest; another seed differs", async () => {
    const run = async (seed: number) => {
      await using sb = await Sandbox.create({ ...e.opts, seed });
      // [nano] every source of randomness and the clock are seeded: the whole output repeats.
      // [heavy] only Python's `random` is seeded (README), and vfsDigest leaves times out.
      // [auto] on its nano side, but with the real clock (the heavy tier has no other): as [heavy].
      const code = e.tier === "nano" && e.opts.tier !== "auto" ? s.determinism : "import os, random\nos.makedirs('/tmp/det', exist_ok=True)\nopen('/tmp/det/out.txt', 'w').write(str(random.random()))\nprint(random.random())";
      const r = await sb.runCode(code);
      assert.equal(r.error, undefined, r.error?.traceback);
      assert.equal(r.seed, seed);
      return [r.stdout, r.vfsDigest];
    };
    const a = await run(1234);
    const b = await run(1234);
    assert.deepEqual(a, b);
    const c = await run(1235);
    assert.notEqual(c[0], a[0]);
    assert.notEqual(c[1], a[1]);
  });

  it("kill(): idempotent, later calls throw SandboxClosedError, nothing of the sandbox is left", async () => {
    const sb = await Sandbox.create(e.opts);
    const gone = e.trace(sb);
    if (e.heavy) {
      // [heavy] it runs in a cgroup, and a background process in the guest dies with it.
      const res = e.heavy.resources(sb);
      assert.ok(e.heavy.leftovers(res).cgroups.length > 0, "the sandbox runs in a cgroup");
      await sb.commands.run("sleep 100 & true");
    }
    await sb.kill();
    await sb.kill();
    assert.equal(sb.closed, true);
    await assert.rejects(sb.runCode("1"), SandboxClosedError);
    await assert.rejects(sb.files.read("/tmp/x"), SandboxClosedError);
    await assert.rejects(sb.files.write("/tmp/x", "x"), SandboxClosedError);
    await gone();
  });

  it("await using disposes the sandbox: nothing of it is left", async () => {
    let gone: () => Promise<void>;
    {
      await using sb = await Sandbox.create(e.opts);
      gone = e.trace(sb);
      assert.equal((await sb.runCode(s.strValue)).value, s.str("aaa"));
    }
    await gone();
  });
}
