// An agent's typical analysis on the heavy tier's data image (`image: "data"`): a CSV read with
// pandas, a matplotlib chart and a table, returned as a valid PNG and an HTML table through the
// library, the CLI, MCP (the SDK client over stdio) and HTTP; plus how figures behave (plt.show
// mid-cell, closed after each cell, a Figure value drawn once), pandas Series as HTML, numpy's
// seeding, and the modules a fresh sandbox of this image has already imported.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { Sandbox, type DisplayResult, type RunResult } from "../../src/index.js";
import { agentboxEnv } from "../helpers.js";
import { ensureDataImage, skipHeavy } from "../heavy.js";
import { microvm } from "../conformance/heavy.js";
import { BIN, spawnServer } from "../server-helpers.js";

const run = promisify(execFile);

const CSV = ["region,month,amount", ...["north", "south", "east", "west"].flatMap((r, i) => [1, 2, 3].map((m) => `${r},${m},${(i + 1) * 100 + m * 7}`))].join("\n") + "\n";

/** The analysis an agent writes: load, aggregate, chart, table. */
const ANALYSIS = `
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv("/home/user/sales.csv")
totals = df.groupby("region")["amount"].sum()
print("regions:", len(totals))
ax = totals.plot(kind="bar", title="Sales by region")
ax.set_ylabel("amount")
df.describe()
`;

/** A PNG's width and height, after checking its signature and its header chunk's CRC. */
function pngSize(b64: string): { width: number; height: number } {
  const png = Buffer.from(b64, "base64");
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG signature");
  assert.equal(png.subarray(12, 16).toString("latin1"), "IHDR");
  assert.equal(png.readUInt32BE(29), zlib.crc32(png.subarray(12, 29)) >>> 0, "IHDR CRC");
  assert.equal(png.subarray(-8, -4).toString("latin1"), "IEND", "the PNG is whole");
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

/** The analysis's results: the describe() table (the cell's value) and the bar chart. */
function checkAnalysis(results: readonly DisplayResult[] | undefined): void {
  assert.ok(results, "the run has rich results");
  const table = results.find((r) => r.data["text/html"]);
  const chart = results.find((r) => r.data["image/png"]);
  assert.ok(table && chart, `a table and a chart, got ${JSON.stringify(results.map((r) => Object.keys(r.data)))}`);
  assert.equal(table.main, true, "describe() is the cell's value");
  assert.match(table.data["text/html"]!, /<table[^>]*class="dataframe"[\s\S]*<th>count<\/th>[\s\S]*<\/table>/);
  assert.match(table.data["text/plain"]!, /count\s+12\.0/);
  assert.equal(chart.main, false);
  const { width, height } = pngSize(chart.data["image/png"]!);
  assert.ok(width >= 300 && height >= 200, `a real chart, got ${width}x${height}`);
  assert.match(chart.data["text/plain"]!, /^<Figure size \d+x\d+ with 1 Axes>$/);
}

describe("data analysis on the data image", { skip: skipHeavy }, () => {
  before(async () => {
    await ensureDataImage();
    await Sandbox.configurePool({ size: 0 });
  });

  describe("library", () => {
    let sb: Sandbox;
    before(async () => {
      sb = await Sandbox.create({ tier: "heavy", backend: "gvisor", image: "data", limits: { memoryMb: 512, timeoutMs: 60_000 }, seed: 7 });
    });
    after(() => sb?.kill());

    it("starts with pandas, numpy and matplotlib imported (the image's warm imports)", async () => {
      const r = await sb.runCode("import sys; [m in sys.modules for m in ('numpy', 'pandas', 'matplotlib.pyplot')]");
      assert.equal(r.value, "[True, True, True]", r.stderr);
    });

    it("CSV → pandas → matplotlib → table: an HTML table and a valid PNG", async () => {
      await sb.files.write("/home/user/sales.csv", CSV);
      const r = await sb.runCode(ANALYSIS);
      assert.equal(r.error, undefined, r.error?.traceback);
      assert.equal(r.stdout, "regions: 4\n");
      checkAnalysis(r.results);
    });

    it("plt.show() returns the figure at once and closes it; the next cell has no figure left", async () => {
      const r = await sb.runCode('plt.plot([1, 2, 3]); plt.show(); print("after show"); display(df["amount"].head(2)); plt.figure(figsize=(2, 2)); plt.plot([3, 1])');
      assert.equal(r.error, undefined, r.error?.traceback);
      const kinds = (r.results ?? []).map((x) => [x.main, Object.keys(x.data).sort().join("+")]);
      // show()'s figure, the Series as a table, then the figure still open at the end of the cell;
      // the final value (a list of lines) has no rich form. A figure also carries its chart data.
      const figure = "application/vnd.agentbox.chart+json+image/png+text/plain";
      assert.deepEqual(kinds, [[false, figure], [false, "text/html+text/plain"], [false, figure]]);
      assert.deepEqual(JSON.parse(r.results![2]!.data["application/vnd.agentbox.chart+json"]!).elements, [{ label: "Line 0", points: [[0, 3], [1, 1]] }]);
      assert.match(r.results![1]!.data["text/html"]!, /<table[\s\S]*amount[\s\S]*<\/table>/);
      assert.equal(pngSize(r.results![2]!.data["image/png"]!).width < pngSize(r.results![0]!.data["image/png"]!).width, true, "the 2x2 inch figure is the smaller one");
      const next = await sb.runCode("len(plt.get_fignums())");
      assert.equal(next.value, "0");
      assert.equal(next.results, undefined);
    });

    it("a Figure as the cell's value is drawn once, as the main result", async () => {
      const r = await sb.runCode("fig, ax = plt.subplots(); ax.plot([1, 4, 9]); fig");
      assert.deepEqual((r.results ?? []).map((x) => x.main), [true]);
      pngSize(r.results![0]!.data["image/png"]!);
    });

    it("a figure that cannot be drawn is a note on stderr, not a crash; the sandbox lives on", async () => {
      const r = await sb.runCode('fig = plt.figure(); fig.text(0.5, 0.5, r"$\\frac{1}{$")');
      assert.equal(r.error, undefined);
      assert.match(r.stderr, /display: a matplotlib figure could not be drawn: ValueError/);
      assert.equal((await sb.runCode("1 + 1")).value, "2");
    });

    it("numpy's global generator is seeded like random: same seed, same draws", async () => {
      const draw = "import numpy as np; import random; (np.random.randint(0, 10**9), random.randint(0, 10**9))";
      const values: string[] = [];
      for (let i = 0; i < 2; i++) {
        await using other = await Sandbox.create({ tier: "heavy", backend: "gvisor", image: "data", limits: { memoryMb: 512 }, seed: 42 });
        values.push((await other.runCode(draw)).value!);
      }
      assert.equal(values[0], values[1]);
      assert.match(values[0]!, /^\(\d+, \d+\)$/);
    });
  });

  it("microVM backend: the data image's disk and snapshot, with the stack imported; the analysis returns its chart", { skip: microvm.skip }, async () => {
    // Under software emulation here (TCG): slow, but the same image, agent and warm-up path as KVM.
    await using sb = await Sandbox.create({ tier: "heavy", backend: "microvm", image: "data", pool: false, limits: { timeoutMs: 120_000 } });
    assert.deepEqual({ tier: sb.info.tier, backend: "backend" in sb.info ? sb.info.backend : undefined }, { tier: "heavy", backend: "microvm" });
    assert.equal(sb.options.limits.memoryMb, 1024, "the data image's memory default");
    const warm = await sb.runCode("import sys; [m in sys.modules for m in ('numpy', 'pandas', 'matplotlib.pyplot')]");
    assert.equal(warm.value, "[True, True, True]", "imported in the base snapshot");
    await sb.files.write("/home/user/sales.csv", CSV);
    const r = await sb.runCode(ANALYSIS);
    assert.equal(r.error, undefined, r.error?.traceback);
    checkAnalysis(r.results);
  });

  it("CLI: agentbox run --tier heavy --image data --json returns the table and the chart", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-data-cli-"));
    try {
      // The CLI's sandbox has no files of the host: the CSV comes in through a read-only mount
      // (readable by the guest's user: mkdtemp makes the directory 0700).
      fs.chmodSync(dir, 0o755);
      fs.writeFileSync(path.join(dir, "sales.csv"), CSV);
      const script = path.join(dir, "analysis.py");
      fs.writeFileSync(script, ANALYSIS.replace("/home/user/sales.csv", "/home/user/data/sales.csv"));
      const { stdout } = await run(process.execPath, [BIN, "run", "--tier", "heavy", "--backend", "gvisor", "--image", "data", "--memory", "512", "--timeout", "60s", "--mount", `${dir}:/home/user/data`, "--json", script], { env: agentboxEnv(), maxBuffer: 16 << 20 }).catch((e: { stdout?: string; stderr?: string }) => assert.fail(`agentbox run failed: ${e.stdout?.slice(0, 4000)} ${e.stderr}`));
      const r = JSON.parse(stdout) as RunResult;
      assert.equal(r.stdout, "regions: 4\n");
      checkAnalysis(r.results);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("MCP: run_python on `agentbox mcp --tier heavy --image data` returns the chart as an image block", async () => {
    const transport = new StdioClientTransport({ command: process.execPath, args: [BIN, "mcp", "--tier", "heavy", "--backend", "gvisor", "--image", "data", "--memory", "512", "--timeout", "60s"], env: agentboxEnv(), stderr: "pipe" });
    const client = new Client({ name: "agentbox-test", version: "0.0.0" });
    await client.connect(transport);
    try {
      const w = (await client.callTool({ name: "write_file", arguments: { path: "/home/user/sales.csv", content: CSV } })) as CallToolResult;
      assert.notEqual(w.isError, true);
      const r = (await client.callTool({ name: "run_python", arguments: { code: ANALYSIS } })) as CallToolResult;
      assert.notEqual(r.isError, true, JSON.stringify(r.content).slice(0, 2000));
      const image = r.content.find((c) => c.type === "image");
      assert.ok(image && image.type === "image", `an image block, got ${r.content.map((c) => c.type).join(",")}`);
      assert.equal(image.mimeType, "image/png");
      pngSize(image.data);
      const text = r.content.map((c) => (c.type === "text" ? c.text : "")).join("");
      assert.match(text, /regions: 4/);
      assert.match(text, /count\s+12\.0/);
    } finally {
      await client.close();
    }
  });

  it("HTTP: POST /sandboxes { image: \"data\" } then /run returns the results in its JSON", async () => {
    const { proc, url, stderr } = await spawnServer(["--pool", "0"]);
    try {
      const post = async (p: string, body: unknown) => {
        const res = await fetch(`${url}${p}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
        const json = (await res.json()) as Record<string, unknown>;
        assert.ok(res.ok, `${p}: ${res.status} ${JSON.stringify(json)} ${stderr()}`);
        return json;
      };
      const sb = await post("/sandboxes", { tier: "heavy", backend: "gvisor", image: "data", limits: { memoryMb: 512, timeoutMs: 60_000 } });
      const id = String(sb.id);
      const put = await fetch(`${url}/sandboxes/${id}/files?path=/home/user/sales.csv`, { method: "PUT", body: CSV });
      assert.ok(put.ok, `${put.status} ${await put.text()}`);
      const r = (await post(`/sandboxes/${id}/run`, { code: ANALYSIS })) as unknown as RunResult;
      assert.equal(r.stdout, "regions: 4\n");
      checkAnalysis(r.results);
      await fetch(`${url}/sandboxes/${id}`, { method: "DELETE" });
    } finally {
      proc.kill("SIGTERM");
    }
  });
});
