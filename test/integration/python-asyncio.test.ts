// asyncio in the nano tier's Python: a pure-Python event loop (no JavaScript bridge) that runs
// asyncio.run, tasks and the synchronisation primitives, sleeps on the sandbox clock, accepts a
// top-level await in a cell, and still yields to the time limit.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";

async function value(sb: Sandbox, code: string): Promise<string | undefined> {
  const r = await sb.runCode(code);
  assert.equal(r.error, undefined, r.error?.traceback);
  return r.value;
}

describe("python asyncio: the event loop", () => {
  it("asyncio.run, create_task and gather", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = [
      "import asyncio",
      "async def double(x):",
      "    await asyncio.sleep(0.01 * x)",
      "    return x * 2",
      "async def main():",
      "    t = asyncio.create_task(double(10))",
      "    rest = await asyncio.gather(*(double(i) for i in range(5)))",
      "    return rest, await t",
      "asyncio.run(main())",
    ].join("\n");
    assert.equal(await value(sb, code), "([0, 2, 4, 6, 8], 20)");
  });

  it("wait_for and asyncio.timeout raise TimeoutError", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = [
      "import asyncio",
      "async def slow():",
      "    await asyncio.sleep(10)",
      "async def main():",
      "    out = []",
      "    try:",
      "        await asyncio.wait_for(slow(), 0.05)",
      "    except TimeoutError:",
      "        out.append('wait_for')",
      "    try:",
      "        async with asyncio.timeout(0.05):",
      "            await slow()",
      "    except TimeoutError:",
      "        out.append('timeout')",
      "    return out",
      "asyncio.run(main())",
    ].join("\n");
    assert.equal(await value(sb, code), "['wait_for', 'timeout']");
  });

  it("a cancelled task sees CancelledError and reports cancelled()", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = [
      "import asyncio",
      "seen = []",
      "async def worker():",
      "    try:",
      "        await asyncio.sleep(100)",
      "    except asyncio.CancelledError:",
      "        seen.append('cancelled')",
      "        raise",
      "async def main():",
      "    t = asyncio.create_task(worker())",
      "    await asyncio.sleep(0)",
      "    t.cancel()",
      "    try:",
      "        await t",
      "    except asyncio.CancelledError:",
      "        seen.append('awaited')",
      "    return t.cancelled()",
      "asyncio.run(main()), seen",
    ].join("\n");
    assert.equal(await value(sb, code), "(True, ['cancelled', 'awaited'])");
  });

  it("TaskGroup runs its tasks and collects their errors", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = [
      "import asyncio",
      "async def ok(i):",
      "    await asyncio.sleep(0.01)",
      "    return i",
      "async def bad():",
      "    await asyncio.sleep(0.02)",
      "    raise ValueError('boom')",
      "async def main():",
      "    async with asyncio.TaskGroup() as tg:",
      "        ts = [tg.create_task(ok(i)) for i in range(3)]",
      "    first = [t.result() for t in ts]",
      "    errors = []",
      "    try:",
      "        async with asyncio.TaskGroup() as tg:",
      "            tg.create_task(ok(1))",
      "            tg.create_task(bad())",
      "    except* ValueError as eg:",
      "        errors = [str(e) for e in eg.exceptions]",
      "    return first, errors",
      "asyncio.run(main())",
    ].join("\n");
    assert.equal(await value(sb, code), "([0, 1, 2], ['boom'])");
  });

  it("a Queue pipeline with producer and consumers", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = [
      "import asyncio",
      "async def producer(q):",
      "    for i in range(20):",
      "        await q.put(i)",
      "    for _ in range(3):",
      "        await q.put(None)",
      "async def consumer(q, out):",
      "    while (item := await q.get()) is not None:",
      "        await asyncio.sleep(0.001)",
      "        out.append(item * item)",
      "async def main():",
      "    q, out = asyncio.Queue(maxsize=4), []",
      "    await asyncio.gather(producer(q), *(consumer(q, out) for _ in range(3)))",
      "    return sorted(out) == [i * i for i in range(20)]",
      "asyncio.run(main())",
    ].join("\n");
    assert.equal(await value(sb, code), "True");
  });

  it("Event, Lock and Semaphore", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = [
      "import asyncio",
      "async def main():",
      "    ev, lock, sem = asyncio.Event(), asyncio.Lock(), asyncio.Semaphore(2)",
      "    log, active, peak = [], 0, 0",
      "    async def waiter():",
      "        await ev.wait()",
      "        log.append('woke')",
      "    async def locked(i):",
      "        async with lock:",
      "            log.append(('in', i))",
      "            await asyncio.sleep(0.01)",
      "            log.append(('out', i))",
      "    async def limited():",
      "        nonlocal active, peak",
      "        async with sem:",
      "            active += 1",
      "            peak = max(peak, active)",
      "            await asyncio.sleep(0.01)",
      "            active -= 1",
      "    w = asyncio.create_task(waiter())",
      "    await asyncio.sleep(0)",
      "    ev.set()",
      "    await w",
      "    await asyncio.gather(locked(1), locked(2))",
      "    await asyncio.gather(*(limited() for _ in range(6)))",
      "    return log, peak",
      "asyncio.run(main())",
    ].join("\n");
    assert.equal(await value(sb, code), "(['woke', ('in', 1), ('out', 1), ('in', 2), ('out', 2)], 2)");
  });

  it("asyncio.sleep is instant on the virtual clock but advances it", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const t0 = performance.now();
    const v = await value(sb, "import asyncio, time\nt = time.time()\nasyncio.run(asyncio.sleep(30))\ntime.time() - t >= 30");
    assert.equal(v, "True");
    assert.ok(performance.now() - t0 < 5000, `30 virtual seconds took ${Math.round(performance.now() - t0)} ms`);
  });

  it("asyncio.sleep really waits on the real clock", async () => {
    await using sb = await Sandbox.create({ language: "python", clock: "real" });
    const t0 = performance.now();
    assert.equal(await value(sb, "import asyncio\nasyncio.run(asyncio.sleep(0.3))"), undefined);
    assert.ok(performance.now() - t0 >= 290, `returned after ${Math.round(performance.now() - t0)} ms`);
  });

  it("a coroutine waiting on something that can never happen is an error, not a hang", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1, limits: { timeoutMs: 5000 } });
    const r = await sb.runCode("import asyncio\nasyncio.run(asyncio.Event().wait())");
    assert.equal(r.error?.name, "RuntimeError");
    assert.match(r.error?.message ?? "", /deadlock/);
    assert.equal(r.limitHit, undefined);
  });

  it("asyncio.run can be called again in later runs", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    for (let i = 0; i < 3; i++) assert.equal(await value(sb, `import asyncio\nasync def f():\n    return ${i}\nasyncio.run(f())`), String(i));
  });
});

describe("python asyncio: top-level await in a cell", () => {
  it("a cell's last expression after an await is its value", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    assert.equal(await value(sb, "import asyncio\nawait asyncio.sleep(0.01)\n42"), "42");
  });

  it("names a cell binds with await stay as globals", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    await value(sb, "import asyncio\nasync def some_coroutine():\n    await asyncio.sleep(0)\n    return 'done'");
    assert.equal(await value(sb, "r = await some_coroutine()"), undefined);
    assert.equal(await value(sb, "r"), "'done'");
    assert.equal(await value(sb, "rs = await asyncio.gather(some_coroutine(), some_coroutine())\nlen(rs)"), "2");
  });

  it("an error after an await points into the cell", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const r = await sb.runCode("import asyncio\nawait asyncio.sleep(0)\n1 / 0");
    assert.equal(r.error?.name, "ZeroDivisionError");
    assert.match(r.error?.traceback ?? "", /<cell-1>", line 3/);
  });
});

describe("python asyncio: the time limit still applies", () => {
  it("a coroutine that never yields is stopped; the sandbox lives on", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1, limits: { timeoutMs: 500 } });
    const r = await sb.runCode("import asyncio\nasync def f():\n    while True: pass\nasyncio.run(f())");
    assert.equal(r.limitHit, "timeoutMs");
    assert.equal(r.error?.name, "KeyboardInterrupt");
    assert.equal(await value(sb, "6 * 7"), "42");
  });

  for (const clock of ["real", "virtual"] as const) {
    it(`a coroutine sleeping in an endless loop is stopped (${clock} clock); the sandbox lives on`, async () => {
      await using sb = await Sandbox.create({ language: "python", seed: 1, clock, limits: { timeoutMs: 500 } });
      const r = await sb.runCode("import asyncio\nasync def f():\n    while True:\n        await asyncio.sleep(0.01)\nasyncio.run(f())");
      assert.equal(r.limitHit, "timeoutMs");
      assert.equal(r.error?.name, "KeyboardInterrupt");
      assert.equal(await value(sb, "x = 1\nx + 41"), "42");
      // A top-level await loop is stopped the same way, and its task does not come back later.
      const again = await sb.runCode("n = 0\nwhile True:\n    n += 1\n    await asyncio.sleep(0.01)", { timeoutMs: 300 });
      assert.equal(again.limitHit, "timeoutMs");
      const n = await value(sb, "n");
      assert.equal(await value(sb, "await asyncio.sleep(0.05)\nn"), n);
    });
  }

  it("a long sleep on the real clock is cut short by the time limit", async () => {
    await using sb = await Sandbox.create({ language: "python", clock: "real", limits: { timeoutMs: 400 } });
    const t0 = performance.now();
    const r = await sb.runCode("import asyncio\nasyncio.run(asyncio.sleep(60))");
    assert.equal(r.limitHit, "timeoutMs");
    assert.ok(performance.now() - t0 < 5000);
    assert.equal(await value(sb, "1"), "1");
  });
});

describe("python asyncio: the JavaScript bridge stays closed", () => {
  it("no JavaScript object is reachable from any object the collector tracks", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = [
      "import gc, asyncio, time, sys",
      "from pyodide.ffi import JsProxy",
      "asyncio.run(asyncio.sleep(0))",
      "found = set()",
      "for o in gc.get_objects():",
      "    for r in gc.get_referents(o):",
      "        if isinstance(r, JsProxy):",
      "            found.add(type(o).__name__)",
      "sorted(found), 'js' in sys.modules, 'pyodide_js' in sys.modules",
    ].join("\n");
    assert.equal(await value(sb, code), "([], False, False)");
  });

  it("pyodide.webloop and the functions it patched in are gone", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1 });
    const code = "import pyodide, time, asyncio\n(hasattr(pyodide, 'webloop'), type(time.sleep).__name__, asyncio.run.__module__)";
    assert.equal(await value(sb, code), "(False, 'builtin_function_or_method', 'asyncio.runners')");
  });
});
