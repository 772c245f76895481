// The code interpreter's face through the real `@e2b/code-interpreter` SDK, unchanged, pointed at
// an in-process `agentbox serve` by E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Sandbox, type OutputMessage } from "@e2b/code-interpreter";
import { SERVER_DEFAULTS } from "../../src/server/index.js";
import { startE2bServer, type E2bServer } from "../e2b-helpers.js";
import { ensureDataImage, skipHeavy } from "../heavy.js";

// The SDK's runCode leaves its request timer (60 s by default) running when the answer is an HTTP
// error, which keeps the test process alive: calls expected to be refused use a short one.
const QUICK = 3000;

describe("E2B code interpreter on a nano Python sandbox", () => {
  let srv: E2bServer;
  let sbx: Sandbox;

  before(async () => {
    srv = await startE2bServer();
    sbx = await Sandbox.create({ template: "agentbox-python" });
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await srv?.close();
  });

  it("runs code: the trailing expression is the main result's text; state is kept; executionCount counts", async () => {
    const first = await sbx.runCode("x = 20\nx + 1");
    assert.equal(first.text, "21");
    assert.equal(first.error, undefined);
    assert.equal(first.results.length, 1);
    assert.equal(first.results[0]!.isMainResult, true);
    const second = await sbx.runCode("x * 2");
    assert.equal(second.text, "40");
    assert.ok(typeof first.executionCount === "number" && second.executionCount === first.executionCount + 1, `${first.executionCount} then ${second.executionCount}`);
    // A string's repr loses its quotes, as E2B's server does it.
    assert.equal((await sbx.runCode("'a' + 'b'")).text, "ab");
    // No trailing expression: no result.
    assert.deepEqual((await sbx.runCode("y = 1")).results, []);
  });

  it("streams stdout and stderr to the logs and to onStdout/onStderr", async () => {
    const out: OutputMessage[] = [];
    const err: OutputMessage[] = [];
    const ex = await sbx.runCode("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nprint('again')", {
      onStdout: (m) => void out.push(m),
      onStderr: (m) => void err.push(m),
    });
    assert.equal(ex.logs.stdout.join(""), "hello\nagain\n");
    assert.equal(ex.logs.stderr.join(""), "oops\n");
    assert.equal(out.map((m) => m.line).join(""), "hello\nagain\n");
    assert.equal(err.map((m) => m.line).join(""), "oops\n");
    assert.equal(err[0]!.error, true);
    assert.equal(out[0]!.error, false);
  });

  it("reports the guest's exception as execution.error, with a string traceback, and calls onError", async () => {
    let seen: unknown;
    const ex = await sbx.runCode("def f():\n    raise ValueError('bad value')\nprint('before')\nf()", { onError: (e) => void (seen = e) });
    assert.equal(ex.error?.name, "ValueError");
    assert.equal(ex.error?.value, "bad value");
    assert.equal(typeof ex.error?.traceback, "string");
    assert.match(ex.error!.traceback, /ValueError: bad value/);
    assert.match(ex.error!.traceback, /in f/);
    assert.equal(ex.logs.stdout.join(""), "before\n");
    assert.equal(seen, ex.error);
    // The REPL lives on.
    assert.equal((await sbx.runCode("x")).text, "20");
  });

  it("display() results arrive before the main result, through onResult", async () => {
    const seen: string[] = [];
    const ex = await sbx.runCode("display('shown first')\n'last'", { onResult: (r) => void seen.push(r.text ?? "") });
    assert.deepEqual(seen, ["shown first", "last"]);
    assert.equal(ex.results.length, 2);
    assert.equal(ex.results[0]!.isMainResult, false);
    assert.equal(ex.text, "last");
  });

  it("sets env_vars for one run only", async () => {
    const ex = await sbx.runCode("import os\nos.environ.get('E2B_TEST_VAR')", { envs: { E2B_TEST_VAR: "it's set" } });
    assert.equal(ex.text, "it's set");
    assert.equal((await sbx.runCode("print(os.environ.get('E2B_TEST_VAR'))")).logs.stdout.join(""), "None\n");
  });

  it("refuses a language the sandbox cannot run, with a clear error", async () => {
    await assert.rejects(sbx.runCode("1 + 1", { language: "javascript", requestTimeoutMs: QUICK }), (e: Error) => e.name === "NotFoundError" && /no javascript context in this sandbox: it runs python/.test(e.message));
    assert.equal((await sbx.runCode("1 + 1", { language: "python" })).text, "2");
  });

  it("contexts: the default one is listed; another has its own state; restart and remove", async () => {
    const before = await sbx.listCodeContexts();
    assert.deepEqual(before.map((c) => c.id), ["default"]);
    const ctx = await sbx.createCodeContext({ language: "python", cwd: "/tmp" });
    assert.equal(ctx.language, "python");
    assert.equal(ctx.cwd, "/tmp");
    assert.deepEqual((await sbx.listCodeContexts()).map((c) => c.id).sort(), ["default", ctx.id].sort());

    // Its own namespace: the default context's x is not there, and its x does not leak out.
    const missing = await sbx.runCode("x", { context: ctx });
    assert.equal(missing.error?.name, "NameError");
    await sbx.runCode("x = 'ctx'\nimport os", { context: ctx });
    assert.equal((await sbx.runCode("x", { context: ctx })).text, "ctx");
    assert.equal((await sbx.runCode("os.getcwd()", { context: ctx })).text, "/tmp");
    assert.equal((await sbx.runCode("x")).text, "20");
    const counted = await sbx.runCode("print('in ctx')\nx + '!'", { context: ctx });
    assert.equal(counted.text, "ctx!");
    assert.equal(counted.logs.stdout.join(""), "in ctx\n");
    assert.equal(counted.executionCount, 5);

    await sbx.restartCodeContext(ctx);
    assert.equal((await sbx.runCode("x", { context: ctx })).error?.name, "NameError");
    assert.equal((await sbx.runCode("x")).text, "20");

    await sbx.removeCodeContext(ctx);
    assert.deepEqual((await sbx.listCodeContexts()).map((c) => c.id), ["default"]);
    await assert.rejects(sbx.runCode("1", { context: ctx, requestTimeoutMs: QUICK }), (e: Error) => e.name === "NotFoundError" && /not found/.test(e.message));
    await assert.rejects(sbx.removeCodeContext("default"), /400/);
  });

  it("a run longer than the SDK's timeoutMs is a TimeoutError and is interrupted; the REPL keeps its state", async () => {
    const t0 = Date.now();
    await assert.rejects(sbx.runCode("import time\nwhile True:\n    time.sleep(0.05)", { timeoutMs: 1500 }), (e: Error) => e.name === "TimeoutError" && /Execution timed out/.test(e.message));
    assert.ok(Date.now() - t0 < 10_000);
    // The hang-up interrupted the loop: the next run does not queue behind it.
    const t1 = Date.now();
    assert.equal((await sbx.runCode("x", { timeoutMs: 20_000 })).text, "20");
    assert.ok(Date.now() - t1 < 10_000, `the next run took ${Date.now() - t1} ms`);
  });

  it("restarting the default context clears the REPL's variables", async () => {
    await sbx.restartCodeContext("default");
    assert.equal((await sbx.runCode("x")).error?.name, "NameError");
    assert.equal((await sbx.runCode("z = 3\nz")).text, "3");
  });

  it("refuses malformed requests without harm", async () => {
    const url = `${srv.server.url}/e2b/sandbox/execute`;
    const headers = { "content-type": "application/json", "e2b-sandbox-id": sbx.sandboxId, "e2b-sandbox-port": "49999", "e2b-traffic-access-token": (sbx as unknown as { trafficAccessToken: string }).trafficAccessToken };
    for (const body of ["{", JSON.stringify({ code: 5 }), JSON.stringify({ code: "1", env_vars: { "A=B": "x" } }), JSON.stringify({ code: "1", context_id: "default", language: "python" })]) {
      const res = await fetch(url, { method: "POST", headers, body });
      assert.equal(res.status, 400, body);
      assert.ok((await res.text()).length > 0);
    }
    const noToken = await fetch(url, { method: "POST", headers: { ...headers, "e2b-traffic-access-token": "nope" }, body: JSON.stringify({ code: "1" }) });
    assert.equal(noToken.status, 401);
    const big = await fetch(url, { method: "POST", headers, body: JSON.stringify({ code: "#".repeat(SERVER_DEFAULTS.maxJsonBytes) }) });
    assert.equal(big.status, 413);
    assert.equal((await sbx.runCode("z")).text, "3");
  });
});

describe("E2B code interpreter on a nano JavaScript sandbox", () => {
  let srv: E2bServer;
  let sbx: Sandbox;

  before(async () => {
    srv = await startE2bServer();
    sbx = await Sandbox.create({ template: "agentbox-javascript" });
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await srv?.close();
  });

  it("runs JavaScript with language 'js'; Python is refused; no extra contexts", async () => {
    const ex = await sbx.runCode("const a = 6; console.log('hi'); a * 7", { language: "js" });
    assert.equal(ex.text, "42");
    assert.equal(ex.logs.stdout.join(""), "hi\n");
    assert.equal((await sbx.runCode("a + 1", { language: "javascript" })).text, "7");
    await assert.rejects(sbx.runCode("1", { language: "python", requestTimeoutMs: QUICK }), (e: Error) => e.name === "NotFoundError");
    await assert.rejects(sbx.createCodeContext({ language: "javascript" }), /400/);
  });
});

describe("E2B code interpreter on the heavy tier (data image)", { skip: skipHeavy }, () => {
  let srv: E2bServer;
  let sbx: Sandbox;

  before(async () => {
    await ensureDataImage();
    srv = await startE2bServer();
    sbx = await Sandbox.create();
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await srv?.close();
  });

  it("a pandas DataFrame is a main result with html and text", async () => {
    const ex = await sbx.runCode("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})\ndf");
    assert.equal(ex.error, undefined, ex.error?.traceback);
    const main = ex.results.find((r) => r.isMainResult);
    assert.ok(main);
    assert.match(main.html ?? "", /<table/);
    assert.match(main.text ?? "", /a\s+b/);
  });

  it("a matplotlib figure is a png result with its chart data", async () => {
    const ex = await sbx.runCode("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.xlabel('time (s)')\nplt.show()");
    assert.equal(ex.error, undefined, ex.error?.traceback);
    assert.equal(ex.results.length, 1);
    const fig = ex.results[0]!;
    assert.ok(fig.png, JSON.stringify(fig.formats()));
    assert.deepEqual([...Buffer.from(fig.png, "base64").subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.match(fig.text ?? "", /^<Figure size \d+x\d+ with 1 Axes>$/);
    const chart = fig.chart as unknown as Record<string, unknown>;
    assert.equal(chart.type, "line");
    assert.equal(chart.title, "squares");
    assert.equal(chart.x_label, "time (s)");
    assert.equal(chart.x_unit, "s");
    assert.equal(chart.y_label, null);
    assert.equal(chart.x_scale, "linear");
    assert.deepEqual(chart.elements, [{ label: "Line 0", points: [[1, 1], [2, 4], [3, 9]] }]);
    assert.deepEqual(Object.keys(fig.extra ?? {}), []);
  });

  it("bar and pie charts; several axes make a superchart", async () => {
    const bar = await sbx.runCode("plt.bar(['a', 'b', 'c'], [3, 5, 2], label='counts')\nplt.show()");
    assert.deepEqual((bar.results[0]!.chart as unknown as { type: string; elements: unknown }).elements, [
      { label: "a", group: "counts", value: 3 },
      { label: "b", group: "counts", value: 5 },
      { label: "c", group: "counts", value: 2 },
    ]);
    const pie = await sbx.runCode("plt.pie([1, 1], labels=['x', 'y'])\nplt.show()");
    const pc = pie.results[0]!.chart as unknown as { type: string; elements: { label: string; angle: number }[] };
    assert.equal(pc.type, "pie");
    assert.deepEqual(pc.elements.map((e) => [e.label, Math.round(e.angle)]), [["x", 180], ["y", 180]]);
    const two = await sbx.runCode("fig, (a, b) = plt.subplots(1, 2)\na.scatter([1, 2], [3, 4])\nb.plot(['u', 'v'], [5, 6])\nfig.suptitle('two')\nplt.show()");
    const sc = two.results[0]!.chart as unknown as { type: string; title: string; elements: { type: string; x_scale: string; elements: { points: unknown }[] }[] };
    assert.equal(sc.type, "superchart");
    assert.equal(sc.title, "two");
    assert.deepEqual(sc.elements.map((e) => e.type), ["scatter", "line"]);
    assert.equal(sc.elements[1]!.x_scale, "categorical");
    assert.deepEqual(sc.elements[1]!.elements[0]!.points, [["u", 5], ["v", 6]]);
    // Data too large for the chart (over 256 KB of JSON): the figure is still its PNG.
    const big = await sbx.runCode("for k in range(4):\n    plt.plot([i * 1.000001 + k for i in range(10000)])\nplt.show()");
    assert.equal(big.results.length, 1);
    assert.ok(big.results[0]!.png);
    assert.equal(big.results[0]!.chart, undefined);
  });

  it("box plots are box_and_whisker charts, vertical or horizontal, lines or patches; a line plot stays a line", async () => {
    type Box = { label: string; min: number; first_quartile: number; median: number; third_quartile: number; max: number; outliers: number[] };
    type BoxChart = { type: string; x_label: string | null; y_label: string | null; elements: Box[] };
    // matplotlib's defaults (numpy's linear percentiles, whis=1.5):
    // a = [1, 2, 3, 4, 5, 20]: q1 2.25, median 3.5, q3 4.75, IQR 2.5, whisker bounds [-1.5, 8.5]:
    //   the whiskers end at the data points inside them, 1 and 5; 20 is an outlier.
    // b = [2, 3, 4, 5, 6]: q1 3, median 4, q3 5, IQR 2, bounds [0, 8]: whiskers 2 and 6, no outliers.
    const expected: Box[] = [
      { label: "a", min: 1, first_quartile: 2.25, median: 3.5, third_quartile: 4.75, max: 5, outliers: [20] },
      { label: "b", min: 2, first_quartile: 3, median: 4, third_quartile: 5, max: 6, outliers: [] },
    ];
    const data = "[[1, 2, 3, 4, 5, 20], [2, 3, 4, 5, 6]]";
    const vertical = await sbx.runCode(`plt.boxplot(${data}, labels=["a", "b"])\nplt.ylabel("value (ms)")\nplt.show()`);
    assert.equal(vertical.error, undefined, vertical.error?.traceback);
    assert.equal(vertical.results.length, 1);
    assert.ok(vertical.results[0]!.png);
    const v = vertical.results[0]!.chart as unknown as BoxChart;
    assert.equal(v.type, "box_and_whisker");
    assert.equal(v.y_label, "value (ms)");
    assert.equal((v as unknown as { y_unit: string }).y_unit, "ms");
    assert.deepEqual(v.elements, expected);
    // patch_artist=True draws each box as a PathPatch instead of a line; vert=False swaps the axes
    // (the labels are then the y ticks'). The same statistics come out.
    const horizontal = await sbx.runCode(`plt.boxplot(${data}, labels=["a", "b"], patch_artist=True, vert=False)\nplt.show()`);
    assert.equal(horizontal.error, undefined, horizontal.error?.traceback);
    const h = horizontal.results[0]!.chart as unknown as BoxChart;
    assert.equal(h.type, "box_and_whisker");
    assert.deepEqual(h.elements, expected);
    // pandas draws through matplotlib's boxplot: the columns are the labels.
    // x = [1, 2, 3, 4, 50]: q1 2, median 3, q3 4, bounds [-1, 7]: whiskers 1 and 4, 50 an outlier.
    const pandas = await sbx.runCode("import pandas as pd\npd.DataFrame({'x': [1, 2, 3, 4, 50], 'y': [3, 4, 5, 6, 7]}).plot(kind='box')\nplt.show()");
    const p = pandas.results[0]!.chart as unknown as BoxChart;
    assert.equal(p.type, "box_and_whisker");
    assert.deepEqual(p.elements.map((e) => [e.label, e.min, e.first_quartile, e.median, e.third_quartile, e.max, e.outliers]), [
      ["x", 1, 2, 3, 4, 4, [50]],
      ["y", 3, 4, 5, 6, 7, []],
    ]);
    // Ordinary lines, even ones with vertical segments, are not taken for boxes.
    const line = await sbx.runCode("plt.plot([1, 1, 2, 2], [0, 3, 3, 0])\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()");
    const l = line.results[0]!.chart as unknown as { type: string; elements: unknown[] };
    assert.equal(l.type, "line");
    assert.equal(l.elements.length, 2);
  });

  it("env_vars and a second context work on the heavy tier's REPL too", async () => {
    assert.equal((await sbx.runCode("import os\nos.environ['HEAVY_VAR']", { envs: { HEAVY_VAR: "yes" } })).text, "yes");
    assert.equal((await sbx.runCode("os.environ.get('HEAVY_VAR')")).results.length, 0);
    const ctx = await sbx.createCodeContext();
    assert.equal((await sbx.runCode("df", { context: ctx })).error?.name, "NameError");
    assert.equal((await sbx.runCode("len(df)")).text, "2");
  });
});
