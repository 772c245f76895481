// Tier "auto" for real: the nano worker's Python decides, from the parsed cell, whether it needs the
// heavy tier; a stdlib cell stays on nano; a cell that needs processes or a module the nano Python
// lacks moves the sandbox to gVisor with its earlier state replayed; commands move it; a replay
// that fails is a ReplayError and the sandbox stays on nano; the HTTP API and the CLI take it.
// Heavy cases skip with the reason where gVisor cannot run (then the move is a TierUnavailableError).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import dns from "node:dns/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it, mock } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { createMcpServer } from "../../src/mcp/index.js";
import { ReplayError, Sandbox, TierUnavailableError } from "../../src/index.js";
import { createServer, KeyRing, type AgentboxServer } from "../../src/server/index.js";
import { agentboxEnv, waitGone } from "../helpers.js";
import { ensureImage, leftovers, skipHeavy, waitFor } from "../heavy.js";
import { BIN, heavyBoxesOf } from "../server-helpers.js";

const cleanBoxes = () => heavyBoxesOf(process.pid).every((b) => leftovers(b).processes.length === 0 && !leftovers(b).dir);

describe('tier "auto": the decision, on the nano side', () => {
  // An image that is never built: a cell that needs the heavy tier fails to start it, which shows
  // what the guest decided without needing gVisor here.
  let sb: Sandbox;
  before(async () => {
    sb = await Sandbox.create({ tier: "auto", backend: "gvisor", packages: ["agentbox-test-never-built"] });
  });
  after(async () => {
    await sb.kill();
  });

  it("a stdlib cell runs on the nano tier (info and result say so); so does every nano and heavy result's tier", async () => {
    assert.deepEqual(sb.info, { tier: "auto", current: "nano" });
    const r = await sb.runCode("import json, csv, re, os.path, collections\nx = 41\njson.dumps({'x': x + 1})");
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(r.tier, "nano");
    assert.equal(r.value, `'{"x": 42}'`);
    await using nano = await Sandbox.create();
    assert.equal((await nano.runCode("1")).tier, "nano");
  });

  it("the guest parses: a syntax error is the guest's SyntaxError, and text that only looks like an import stays on nano", async () => {
    const syn = await sb.runCode("1 +");
    assert.deepEqual([syn.tier, syn.error?.name], ["nano", "SyntaxError"]);
    const unparsable = await sb.runCode("import subprocess\n1 +");
    assert.deepEqual([unparsable.tier, unparsable.error?.name], ["nano", "SyntaxError"], "code the guest cannot parse runs (and fails) where it is");
    const looks = await sb.runCode("s = 'import subprocess; os.system(\"ls\")'  # import pandas\nimport os\nos.path.join('a', s[:6])");
    assert.equal(looks.error, undefined, looks.error?.traceback);
    assert.deepEqual([looks.tier, looks.value], ["nano", "'a/import'"]);
  });

  const needsHeavy: [string, RegExp][] = [
    ["import pandas as pd", /import of pandas \(not in the nano tier's Python\)/],
    ["import numpy", /import of numpy/],
    ["from matplotlib import pyplot as plt", /import of matplotlib/],
    ["import sklearn", /import of sklearn/],
    ["import subprocess\nsubprocess.run(['ls'])", /import of subprocess \(starts processes/],
    ["import multiprocessing", /import of multiprocessing/],
    ["from concurrent.futures import ProcessPoolExecutor", /concurrent\.futures\.ProcessPoolExecutor/],
    ["import os\nos.system('ls')", /os\.system \(starts a process/],
    ["import os as o\no.popen('ls')", /os\.popen/],
    ["from os import fork", /os\.fork/],
    ["os.execv('/bin/true', ['true'])", /os\.execv/], // `os` bound by an earlier cell
    ["def later():\n    import pandas\n", /import of pandas/],
    ["__import__('pandas')", /import of pandas/],
    ["import importlib\nimportlib.import_module('scipy.stats')", /import of scipy/],
  ];
  it("code that needs the heavy tier is refused before any of it runs: the reason names the import or call", async () => {
    await sb.runCode("import os\nmarker = 0");
    for (const [code, why] of needsHeavy) {
      await assert.rejects(sb.runCode(`marker += 1\n${code}`), (e: unknown) => {
        assert.ok(e instanceof TierUnavailableError, `${code}: ${String(e)}`);
        assert.match(e.message, why, code);
        assert.match(e.message, /not built; run `npx agentbox image build --packages agentbox-test-never-built`/, "says why the heavy tier cannot start, and the fix");
        assert.match(e.message, /stays on the nano tier/);
        return true;
      });
    }
    const after = await sb.runCode("marker");
    assert.deepEqual([after.tier, after.value], ["nano", "0"], "nothing of a refused cell ran; the sandbox lives on, on nano");
    await assert.rejects(sb.commands.run("ls"), (e: unknown) => e instanceof TierUnavailableError && /commands\.run runs a command/.test(e.message));
    assert.deepEqual(sb.info, { tier: "auto", current: "nano" });
  });
});

describe('tier "auto" on the nano tier: snapshot, pause, fork (replay of its nano history)', () => {
  // An image that is never built: no heavy side is started here (see the move tests below for one).
  const never = () => ({ tier: "auto" as const, backend: "gvisor" as const, packages: ["agentbox-test-never-built"] });

  it("snapshot → restore: globals, files and the seeded stream are there, still on the nano tier; the restored copy runs on nano", async () => {
    await using sb = await Sandbox.create({ ...never(), seed: 11 });
    const first = await sb.runCode("import random\nx = 41\nopen('/home/user/f.txt', 'w').write('saved')");
    assert.equal(first.error, undefined, first.error?.traceback);
    await sb.files.write("/tmp/up.bin", new Uint8Array([1, 2, 250]));
    assert.equal((await sb.runCode("raise ValueError('raised on nano')")).error?.name, "ValueError");
    await using snap = await sb.snapshot();
    await using copy = await Sandbox.restore(snap);
    assert.deepEqual(copy.info, { tier: "auto", current: "nano" });
    assert.notEqual(copy.id, sb.id);
    const code = "(x, open('/home/user/f.txt').read(), list(open('/tmp/up.bin', 'rb').read()), random.random())";
    const [a, b] = await Promise.all([sb.runCode(code), copy.runCode(code)]);
    assert.equal(b.error, undefined, b.error?.traceback);
    assert.equal(b.tier, "nano");
    assert.match(b.value ?? "", /^\(41, 'saved', \[1, 2, 250\], 0\.\d+\)$/);
    assert.equal(b.value, a.value, "the copy continues the original's seeded stream");
    assert.equal((await copy.runCode("x = 1")).tier, "nano");
    assert.equal((await sb.runCode("x")).value, "41", "the original is untouched by its copy");
  });

  it("pause and resume: the same id, its variables and files, still on the nano tier", async () => {
    await using sb = await Sandbox.create({ ...never(), pool: false });
    await sb.runCode("y = 7\nopen('/tmp/p.txt', 'w').write('kept')");
    const pid = sb.pid;
    await sb.pause();
    assert.equal(sb.paused, true);
    await waitGone(pid);
    const r = await sb.runCode("(y, open('/tmp/p.txt').read())");
    assert.deepEqual([r.tier, r.value], ["nano", "(7, 'kept')"]);
    assert.equal(sb.paused, false);
    assert.deepEqual(sb.info, { tier: "auto", current: "nano" });
  });

  it("fork(2) with seeds: independent copies on the nano tier with the parent's state, each its own stream", async () => {
    await using sb = await Sandbox.create({ ...never(), seed: 3 });
    await sb.runCode("import random\nz = [1]");
    const forks = await sb.fork(2, { seeds: [100, 200] });
    try {
      await forks[0]!.runCode("z.append(2)");
      const values = await Promise.all(forks.map((f) => f.runCode("(z, random.random())")));
      assert.deepEqual(values.map((v) => v.tier), ["nano", "nano"]);
      assert.match(values[0]!.value ?? "", /^\(\[1, 2\], /);
      assert.match(values[1]!.value ?? "", /^\(\[1\], /);
      assert.notEqual(values[0]!.value?.slice(-20), values[1]!.value?.slice(-20), "own seeds, own streams");
      assert.deepEqual(forks.map((f) => f.info), [{ tier: "auto", current: "nano" }, { tier: "auto", current: "nano" }]);
      assert.equal((await sb.runCode("z")).value, "[1]");
    } finally {
      await Promise.all(forks.map((f) => f.kill()));
    }
  });

  it("a history that cannot be replayed (a cell stopped by its time limit) refuses snapshot() and pause(); the sandbox runs on", async () => {
    await using sb = await Sandbox.create(never());
    await sb.runCode("w = 2");
    assert.equal((await sb.runCode("while True: pass", { timeoutMs: 300 })).limitHit, "timeoutMs");
    await assert.rejects(sb.snapshot(), (e: unknown) => e instanceof ReplayError && /time limit/.test(e.message));
    await assert.rejects(sb.pause(), (e: unknown) => e instanceof ReplayError);
    assert.equal((await sb.runCode("w")).value, "2");
  });
});

describe('tier "auto": moving to the heavy tier (gVisor)', { skip: skipHeavy }, () => {
  before(async () => {
    await ensureImage();
  });

  it("a cell that imports subprocess moves it: earlier variables and files are there, the nano worker is gone", async () => {
    const sb = await Sandbox.create({ tier: "auto", backend: "gvisor", pool: false, seed: 5 });
    try {
      const nanoPid = sb.pid;
      const first = await sb.runCode("x = 41\nprint('earlier output')\nopen('notes.txt', 'w').write('from nano')\nopen('/tmp/log.txt', 'a').write('once\\n')");
      assert.equal(first.error, undefined, first.error?.traceback);
      assert.equal(first.tier, "nano");
      assert.equal((await sb.runCode("raise ValueError('not replayed')")).error?.name, "ValueError");
      await sb.files.write("/home/user/data/in.csv", "a,b\n1,2\n");
      const bytes = new Uint8Array(256).map((_, i) => i);
      await sb.files.write("/tmp/bin.dat", bytes);
      const r = await sb.runCode("import subprocess\nprint(subprocess.run(['cat', 'notes.txt', 'data/in.csv'], capture_output=True, text=True).stdout)\nx + 1");
      assert.equal(r.error, undefined, r.error?.traceback);
      assert.equal(r.tier, "heavy");
      assert.equal(r.value, "42", "a variable of an earlier nano cell");
      assert.equal(r.stdout, "from nanoa,b\n1,2\n\n", "files written on nano (by code and by the host); replayed output discarded");
      assert.deepEqual(sb.info, { tier: "auto", current: "heavy", backend: "gvisor" });
      assert.deepEqual(await sb.files.read("/tmp/bin.dat", { format: "bytes" }), bytes);
      assert.equal(await sb.files.read("/tmp/log.txt"), "once\n", "files end as nano had them, whatever the replay wrote");
      await waitGone(nanoPid);
      const later = await sb.runCode("import sys\nsys.platform");
      assert.deepEqual([later.tier, later.value], ["heavy", "'linux'"]);
      assert.equal((await sb.commands.run("cat /home/user/notes.txt")).stdout, "from nano");
    } finally {
      await sb.kill();
    }
    assert.ok(await waitFor(cleanBoxes, 15_000), "no gVisor sandbox left");
  });

  it("one network grant on both tiers: urllib through the host broker on nano, the egress proxy after the move; one log, the same secret placeholder", async (t) => {
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.url} ${req.headers.authorization}`);
      res.end("pong");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const lookup = dns.lookup;
    const m = mock.method(dns, "lookup", async (host: string, options: object) => (host === "api.test" ? [{ address: "127.0.0.1", family: 4 }] : (lookup as (h: string, o: object) => Promise<unknown>)(host, options)));
    t.after(() => {
      m.mock.restore();
      server.close();
    });
    await using sb = await Sandbox.create({
      tier: "auto",
      backend: "gvisor",
      pool: false,
      network: { allow: [`api.test:${port}`, `127.0.0.1:${port}`], secrets: [{ name: "TOKEN", value: "auto-secret-value", hosts: [`api.test:${port}`] }] },
    });
    const call = (path: string) =>
      `import os, urllib.request\nurllib.request.urlopen(urllib.request.Request("http://api.test:${port}${path}", headers={"Authorization": os.environ["TOKEN"]})).read().decode()`;
    const onNano = await sb.runCode(call("/nano"));
    assert.deepEqual([onNano.tier, onNano.value, onNano.error], ["nano", "'pong'", undefined]);
    const placeholder = (await sb.runCode("os.environ['TOKEN']")).value;
    const onHeavy = await sb.runCode(`import subprocess\n${call("/heavy")}`);
    assert.deepEqual([onHeavy.tier, onHeavy.value, onHeavy.error], ["heavy", "'pong'", undefined]);
    assert.equal((await sb.runCode("os.environ['TOKEN']")).value, placeholder, "the placeholder survives the move");
    assert.ok(seen.includes("/nano auto-secret-value") && seen.includes("/heavy auto-secret-value"), seen.join("; "));
    const urls = sb.network.log().map((e) => e.url);
    assert.ok(urls.includes(`http://api.test:${port}/nano`) && urls.includes(`http://api.test:${port}/heavy`), "one log across the move");
  });

  it("a snapshot taken on the nano tier restores on nano, and the restored copy still moves: its nano cells are replayed on heavy", async () => {
    await using sb = await Sandbox.create({ tier: "auto", backend: "gvisor", pool: false, seed: 9 });
    await sb.runCode("x = 41\nopen('/home/user/f.txt', 'w').write('from nano')");
    assert.equal((await sb.runCode("raise ValueError('not replayed')")).error?.name, "ValueError");
    await sb.files.write("/tmp/up.txt", "uploaded");
    await using snap = await sb.snapshot();
    await using copy = await Sandbox.restore(snap);
    assert.deepEqual(copy.info, { tier: "auto", current: "nano" });
    assert.deepEqual((await copy.runCode("x")).value, "41");
    const moved = await copy.runCode("import subprocess\nprint(subprocess.run(['cat', '/home/user/f.txt', '/tmp/up.txt'], capture_output=True, text=True).stdout)\nx + 1");
    assert.equal(moved.error, undefined, moved.error?.traceback);
    assert.deepEqual([moved.tier, moved.value, moved.stdout], ["heavy", "42", "from nanouploaded\n"]);
    assert.deepEqual(copy.info, { tier: "auto", current: "heavy", backend: "gvisor" });
    assert.deepEqual(sb.info, { tier: "auto", current: "nano" }, "the original stays on nano");
    // A paused one too: it comes back on nano and moves from there.
    await sb.pause();
    const c = await sb.commands.run("cat /home/user/f.txt");
    assert.deepEqual([c.exitCode, c.stdout], [0, "from nano"]);
    assert.deepEqual([(await sb.runCode("x")).tier, (await sb.runCode("x")).value], ["heavy", "41"]);
  });

  it("commands.run moves it; a snapshot taken on the heavy tier restores on the heavy tier", async () => {
    await using sb = await Sandbox.create({ tier: "auto", backend: "gvisor", pool: false });
    await sb.runCode("y = 5");
    await sb.files.write("/home/user/f.txt", "hi");
    const c = await sb.commands.run("cat f.txt; python3 -c 'import sys; print(sys.platform)'");
    assert.deepEqual([c.exitCode, c.stdout], [0, "hilinux\n"]);
    assert.equal(sb.info.tier === "auto" && sb.info.current, "heavy");
    const r = await sb.runCode("y * 2");
    assert.deepEqual([r.tier, r.value], ["heavy", "10"]);
    await using snap = await sb.snapshot();
    await using copy = await Sandbox.restore(snap);
    assert.deepEqual(copy.info, { tier: "auto", current: "heavy", backend: "gvisor" });
    const c2 = await copy.runCode("y + 1");
    assert.deepEqual([c2.tier, c2.value], ["heavy", "6"]);
  });

  it("a cell that ran on nano but raises when replayed is a ReplayError naming it; the sandbox stays on nano", async () => {
    await using sb = await Sandbox.create({ tier: "auto", backend: "gvisor", pool: false });
    await sb.runCode("z = 1");
    const platform = await sb.runCode("import sys\nassert sys.platform == 'emscripten', 'replayed on ' + sys.platform");
    assert.equal(platform.error, undefined, platform.error?.traceback);
    await assert.rejects(sb.runCode("import subprocess"), (e: unknown) => {
      assert.ok(e instanceof ReplayError, String(e));
      assert.equal(e.cell, 2);
      assert.equal(e.guestError?.name, "AssertionError");
      assert.match(e.message, /cell 2 \(runCode call 2 of this sandbox\) raised AssertionError: replayed on linux there/);
      assert.match(e.message, /import of subprocess/);
      return true;
    });
    assert.deepEqual(sb.info, { tier: "auto", current: "nano" });
    const r = await sb.runCode("z + 1");
    assert.deepEqual([r.tier, r.value], ["nano", "2"]);
    assert.ok(await waitFor(cleanBoxes, 15_000), "the heavy sandbox of the failed move is gone");
  });
});

describe('tier "auto" over HTTP, the CLI and MCP', () => {
  let srv: AgentboxServer;
  const KEY = "key-auto-0123456789abcdef";
  before(async () => {
    if (!skipHeavy) await ensureImage();
    srv = await createServer({ keys: KeyRing.fromEntries([{ name: "a", key: KEY }]), poolSize: 0, log: () => undefined });
  });
  after(async () => {
    await srv.close();
  });
  const api = async (method: string, path: string, json?: unknown) => {
    const res = await srv.app.request(path, { method, headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" }, ...(json !== undefined ? { body: JSON.stringify(json) } : {}) });
    const text = await res.text();
    return { status: res.status, json: (text ? JSON.parse(text) : {}) as Record<string, unknown> & { error?: { code: string; message: string } } };
  };

  it('POST /sandboxes {"tier": "auto"}: info says the tier it runs on; each run says where it ran', async () => {
    const created = await api("POST", "/sandboxes", { tier: "auto", backend: "gvisor", limits: { vfsFiles: 100, cpus: 1 } });
    assert.equal(created.status, 201, JSON.stringify(created.json));
    assert.deepEqual([created.json.tier, created.json.current, created.json.language], ["auto", "nano", "python"]);
    const id = created.json.id as string;
    const nano = await api("POST", `/sandboxes/${id}/run`, { code: "x = 1\nx + 1" });
    assert.deepEqual([nano.status, nano.json.tier, nano.json.value], [200, "nano", "2"]);
    const moved = await api("POST", `/sandboxes/${id}/run`, { code: "import subprocess\nx + 2" });
    if (skipHeavy) {
      assert.deepEqual([moved.status, moved.json.error?.code], [501, "TIER_UNAVAILABLE"]);
    } else {
      assert.deepEqual([moved.status, moved.json.tier, moved.json.value], [200, "heavy", "3"], JSON.stringify(moved.json));
      assert.equal((await api("GET", `/sandboxes/${id}`)).json.current, "heavy");
    }
    const bad = await api("POST", "/sandboxes", { tier: "auto", language: "javascript" });
    assert.equal(bad.status, 400);
    assert.match(bad.json.error?.message ?? "", /language: tier "auto" runs python only/);
    assert.equal((await api("DELETE", `/sandboxes/${id}`)).status, 204);
  });

  it("agentbox run --tier auto: a stdlib cell on nano; a subprocess cell on heavy", () => {
    const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, "run", "--json", "--tier", "auto", ...args], { encoding: "utf8", timeout: 120_000, env: agentboxEnv() });
    const a = cli("-c", "import json\nprint(json.dumps([1]))");
    assert.equal(a.status, 0, a.stderr);
    const ra = JSON.parse(a.stdout) as { tier: string; stdout: string };
    assert.deepEqual([ra.tier, ra.stdout], ["nano", "[1]\n"]);
    const b = cli("--backend", "gvisor", "-c", "import subprocess\nprint(subprocess.check_output(['echo', 'hi'], text=True), end='')");
    if (skipHeavy) {
      assert.equal(b.status, 70, b.stdout);
      assert.match(b.stdout, /TIER_UNAVAILABLE/);
    } else {
      assert.equal(b.status, 0, b.stderr + b.stdout);
      const rb = JSON.parse(b.stdout) as { tier: string; stdout: string };
      assert.deepEqual([rb.tier, rb.stdout], ["heavy", "hi\n"]);
    }
    const bad = spawnSync(process.execPath, [BIN, "run", "--tier", "cloud", "-c", "1"], { encoding: "utf8", timeout: 60_000, env: agentboxEnv() });
    assert.equal(bad.status, 64);
    assert.match(bad.stderr, /--tier: expected one of nano, heavy, auto/);
  });

  it("agentbox mcp --tier auto: run_python starts on nano, run_command is listed, a move is noted", async () => {
    const mcp = createMcpServer({ sandbox: { tier: "auto", backend: "gvisor" } });
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    await mcp.server.connect(serverSide);
    const client = new Client({ name: "agentbox-test", version: "0.0.0" });
    await client.connect(clientSide);
    try {
      const tools = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(tools.includes("run_command") && tools.includes("run_python"), tools.join(", "));
      const call = async (name: string, args: Record<string, unknown>) => (await client.callTool({ name, arguments: args })) as CallToolResult;
      const a = await call("run_python", { code: "n = 6\nn * 7" });
      assert.deepEqual([a.isError, (a.structuredContent as { tier: string }).tier], [false, "nano"]);
      const b = await call("run_python", { code: "import subprocess\nn" });
      const text = b.content.map((c) => (c.type === "text" ? c.text : "")).join("");
      if (skipHeavy) {
        assert.equal(b.isError, true);
        assert.match(text, /TIER_UNAVAILABLE/);
      } else {
        assert.deepEqual([b.isError, (b.structuredContent as { tier: string }).tier], [false, "heavy"], text);
        assert.match(text, /note: this code needed the heavy tier: the sandbox moved/);
        assert.match(text, /\[value\] 6/);
      }
    } finally {
      await client.close();
      await mcp.close();
    }
  });
});
