// `agentbox mcp` driven over stdio by the official MCP SDK client: tools, session state, files,
// limits from the command line, JavaScript (a tool error until that engine lands), clean exit.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { agentboxEnv, isAlive, waitGone } from "../helpers.js";
import { BIN, childPids } from "../server-helpers.js";

describe("agentbox mcp (stdio)", () => {
  let client: Client;
  let transport: StdioClientTransport;
  let stderr = "";

  before(async () => {
    transport = new StdioClientTransport({
      command: process.execPath,
      args: [BIN, "mcp", "--memory", "128", "--timeout", "5s", "--seed", "3", "--env", "WHO=mcp"],
      env: agentboxEnv(),
      stderr: "pipe",
    });
    transport.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    client = new Client({ name: "agentbox-test", version: "0.0.0" });
    await client.connect(transport);
  });
  after(async () => {
    await client.close().catch(() => undefined);
  });

  const call = async (name: string, args: Record<string, unknown>) => (await client.callTool({ name, arguments: args })) as CallToolResult;
  const textOf = (r: CallToolResult) => r.content.map((c) => (c.type === "text" ? c.text : "")).join("");

  it("lists the run and file tools", async () => {
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    assert.deepEqual(names, ["list_files", "read_file", "run_javascript", "run_python", "write_file"]);
  });

  it("run_python keeps state across calls and returns output, value and the structured result", async () => {
    const a = await call("run_python", { code: "import os\nx = 41\nprint('hello', os.environ['WHO'])" });
    assert.equal(a.isError, false, textOf(a));
    assert.equal(textOf(a), "hello mcp");
    const b = await call("run_python", { code: "x + 1" });
    assert.equal(textOf(b), "[value] 42");
    assert.equal((b.structuredContent as { value: string; seed: number }).value, "42");
    assert.equal((b.structuredContent as { seed: number }).seed, 3); // --seed reached the sandbox
    const c = await call("run_python", { code: "1/0" });
    assert.equal(c.isError, true);
    assert.match(textOf(c), /ZeroDivisionError/);
  });

  it("write_file / read_file / list_files share the Python session's file system", async () => {
    assert.equal((await call("write_file", { path: "/data/in.txt", content: "abc" })).isError, undefined);
    assert.equal((await call("write_file", { path: "/data/bin", content: Buffer.from([0, 255, 1]).toString("base64"), encoding: "base64" })).isError, undefined);
    assert.equal(textOf(await call("run_python", { code: "open('/data/in.txt').read().upper()" })), "[value] 'ABC'");
    assert.equal(textOf(await call("read_file", { path: "/data/bin", encoding: "base64" })), "AP8B");
    await call("run_python", { code: "open('/data/out.txt', 'w').write('from python')" });
    assert.equal(textOf(await call("read_file", { path: "/data/out.txt" })), "from python");
    const ls = await call("list_files", { path: "/data" });
    assert.deepEqual((ls.structuredContent as { entries: { name: string }[] }).entries.map((e) => e.name), ["bin", "in.txt", "out.txt"]);
    const missing = await call("read_file", { path: "/data/nope" });
    assert.equal(missing.isError, true);
    assert.match(textOf(missing), /FS_ERROR/);
    const rel = await call("read_file", { path: "relative" });
    assert.equal(rel.isError, true);
    assert.match(textOf(rel), /INVALID_OPTIONS/);
  });

  it("a path with a .. segment is a tool error naming the rule, in both languages; nothing is written", async () => {
    for (const sandbox of ["python", "javascript"]) {
      const w = await call("write_file", { path: "/../x.txt", content: "escaped?", sandbox });
      if (sandbox === "javascript" && /TIER_UNAVAILABLE/.test(textOf(w))) continue;
      assert.equal(w.isError, true, `${sandbox}: ${textOf(w)}`);
      assert.match(textOf(w), /INVALID_OPTIONS/);
      assert.match(textOf(w), /must be absolute, with no "\.\." segment and no NUL byte, got "\/\.\.\/x\.txt"/);
      const ls = await call("list_files", { path: "/", sandbox });
      assert.ok(!ls.isError, textOf(ls));
      assert.ok(!(ls.structuredContent as { entries: { name: string }[] }).entries.some((e) => e.name === "x.txt"), `${sandbox}: /x.txt was written`);
      assert.equal((await call("read_file", { path: "/data/../data/in.txt", sandbox })).isError, true);
    }
  });

  it("limits from the command line apply; a per-call timeout is a limit the session survives", async () => {
    const r = await call("run_python", { code: "while True: pass", timeoutMs: 200 });
    assert.equal(r.isError, true);
    assert.match(textOf(r), /\[limit hit\] limits\.timeoutMs/);
    const mem = await call("run_python", { code: "x = bytearray(200 * 2**20)" });
    assert.match(textOf(mem), /MemoryError|limits\.memoryMb/);
    assert.equal(textOf(await call("run_python", { code: "'alive'" })), "[value] 'alive'");
  });

  it("run_javascript runs in its own sandbox, or is a tool error naming the missing tier", async () => {
    const r = await call("run_javascript", { code: "1 + 2" });
    if (r.isError && /TIER_UNAVAILABLE/.test(textOf(r))) return; // the JavaScript engine has not landed in this build
    assert.equal(r.isError, false, textOf(r));
    assert.match(textOf(r), /\[value\] 3/);
  });

  it("a run whose worker is killed at its time limit still returns what it printed", async () => {
    const r = await call("run_python", { code: "print('before')\nwhile True:\n    try:\n        while True: pass\n    except BaseException:\n        pass", timeoutMs: 300 });
    assert.equal(r.isError, true);
    assert.match(textOf(r), /^before\nTimeoutError \[TIMEOUT\]: time limit of 300 ms/);
    assert.deepEqual(r.structuredContent, { stdout: "before\n", stderr: "", exitCode: 137, limitHit: "timeoutMs" });
    assert.match(textOf(await call("run_python", { code: "'again'" })), /\[value\] 'again'/); // a new session sandbox
  });

  it("closing the session kills its sandboxes and the server exits", async () => {
    const pid = transport.pid!;
    const workers = childPids(pid);
    assert.ok(workers.length >= 1, "the Python session sandbox has a worker");
    await client.close();
    await waitGone(pid, 10_000);
    for (const w of workers) await waitGone(w);
    assert.deepEqual(workers.filter(isAlive), []);
    assert.doesNotMatch(stderr, /Error/);
  });
});

describe("agentbox mcp --allow-net (stdio, the MCP SDK client)", () => {
  let client: Client;
  let server: http.Server;
  let port = 0;

  before(async () => {
    server = http.createServer((_req, res) => res.end("from the host"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
    const transport = new StdioClientTransport({ command: process.execPath, args: [BIN, "mcp", "--allow-net", `127.0.0.1:${port}`, "--deny-net", "evil.example"], env: agentboxEnv(), stderr: "pipe" });
    client = new Client({ name: "agentbox-test", version: "0.0.0" });
    await client.connect(transport);
  });
  after(async () => {
    await client.close().catch(() => undefined);
    server.close();
  });

  it("the tools say which hosts the grant allows; run_python reaches them and nothing else", async () => {
    const tool = (await client.listTools()).tools.find((t) => t.name === "run_python")!;
    assert.match(tool.description ?? "", new RegExp(`Network: HTTP\\(S\\) only to 127\\.0\\.0\\.1:${port}; other hosts are refused\\.`));
    const ok = (await client.callTool({ name: "run_python", arguments: { code: `import urllib.request\nurllib.request.urlopen("http://127.0.0.1:${port}/").read().decode()` } })) as CallToolResult;
    assert.equal(ok.isError, false);
    assert.equal((ok.structuredContent as { value: string }).value, "'from the host'");
    const refused = (await client.callTool({ name: "run_python", arguments: { code: `import urllib.request\nurllib.request.urlopen("http://evil.example/")` } })) as CallToolResult;
    assert.equal(refused.isError, true);
    assert.match(JSON.stringify(refused.content), /denied by network\.deny entry \\"evil\.example\\"/);
  });
});
