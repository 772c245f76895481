// The MCP server in-process (the SDK client over InMemoryTransport): cancellation reaches the
// run, progress notifications carry output, tool bounds follow the session's limits; and
// `agentbox mcp` refuses bad options at start (exit 64).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { createMcpServer, type AgentboxMcp } from "../../src/mcp/index.js";
import { Sandbox } from "../../src/index.js";
import { ensureImage, skipHeavy } from "../heavy.js";
import { BIN } from "../server-helpers.js";

const textOf = (r: CallToolResult) => r.content.map((c) => (c.type === "text" ? c.text : "")).join("");

async function connect(mcp: AgentboxMcp): Promise<Client> {
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await mcp.server.connect(serverSide);
  const client = new Client({ name: "agentbox-test", version: "0.0.0" });
  await client.connect(clientSide);
  return client;
}

describe("MCP server in-process", () => {
  let mcp: AgentboxMcp;
  let client: Client;
  before(async () => {
    await Sandbox.configurePool({ size: 0 });
    mcp = createMcpServer({ sandbox: { limits: { timeoutMs: 25_000 } } });
    client = await connect(mcp);
  });
  after(async () => {
    await client.close();
    await mcp.close();
  });
  const call = async (name: string, args: Record<string, unknown>, opts?: Parameters<Client["callTool"]>[2]) =>
    (await client.callTool({ name, arguments: args }, undefined, opts)) as CallToolResult;

  it("a cancelled run_python stops: the next call answers at once", async () => {
    assert.equal(textOf(await call("run_python", { code: "x = 41" })), "(no output)");
    const ac = new AbortController();
    const t0 = performance.now();
    const cancelled = call("run_python", { code: "while True: pass", timeoutMs: 20_000 }, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error("cancelled by the test")), 1500);
    await assert.rejects(cancelled, /cancelled by the test/);
    const next = await call("run_python", { code: "x + 1" });
    const waited = performance.now() - t0;
    assert.equal(textOf(next), "[value] 42", "the interrupted run left the session's state alone");
    assert.ok(waited < 8000, `the next call answered after ${Math.round(waited)} ms (the cancelled run went on?)`);
  });

  it("sends the output as progress notifications; resetTimeoutOnProgress lets a long run through", async () => {
    const messages: string[] = [];
    const progress: number[] = [];
    const code = "import time, sys\nfor i in range(6):\n    print('tick', i)\n    time.sleep(0.5)\nprint('oops', file=sys.stderr)\n'done'";
    const r = await call("run_python", { code }, {
      timeout: 1200,
      resetTimeoutOnProgress: true,
      onprogress: (p) => {
        progress.push(p.progress);
        if (p.message !== undefined) messages.push(p.message);
      },
    });
    assert.equal(r.isError, false, textOf(r));
    assert.match(textOf(r), /\[value\] 'done'/);
    assert.ok(messages.length >= 3, `got ${messages.length} progress notifications`);
    assert.equal(messages.join(""), "tick 0\ntick 1\ntick 2\ntick 3\ntick 4\ntick 5\n[stderr] oops\n");
    assert.deepEqual([...progress].sort((a, b) => a - b), progress, "progress only grows");
    // Without the reset, the same short timeout ends the request.
    await assert.rejects(call("run_python", { code: "import time\nfor i in range(4):\n    print(i)\n    time.sleep(0.5)" }, { timeout: 1200, onprogress: () => undefined }), /timed out/i);
  });

  it("the tools' timeoutMs is bounded by the session's limit", async () => {
    const tools = (await client.listTools()).tools;
    const run = tools.find((t) => t.name === "run_python")!;
    assert.equal((run.inputSchema.properties as Record<string, { maximum?: number }>).timeoutMs!.maximum, 25_000);
    const r = await call("run_python", { code: "1", timeoutMs: 25_001 });
    assert.equal(r.isError, true);
    assert.match(textOf(r), /timeoutMs/);
  });
});

describe("MCP server, heavy tier (tools only: no sandbox starts)", () => {
  it("suggests writable paths (/home/user), not the read-only root", async () => {
    const mcp = createMcpServer({ sandbox: { tier: "heavy" } });
    const client = await connect(mcp);
    try {
      const tools = (await client.listTools()).tools;
      assert.ok(tools.some((t) => t.name === "run_command"));
      const all = JSON.stringify(tools);
      assert.doesNotMatch(all, /\/data\//);
      assert.match(all, /\/home\/user\//);
    } finally {
      await client.close();
      await mcp.close();
    }
  });
});

describe("MCP server in-process, heavy tier: run_command", { skip: skipHeavy }, () => {
  let mcp: AgentboxMcp;
  let client: Client;
  before(async () => {
    await ensureImage();
    mcp = createMcpServer({ sandbox: { tier: "heavy", limits: { timeoutMs: 25_000 } } });
    client = await connect(mcp);
    // The session's sandbox starts on the first call: started here, so the 1.2 s timeout below
    // (reset by each progress message) times the command's output, not a cold heavy start.
    await client.callTool({ name: "run_command", arguments: { command: "true" } });
  });
  after(async () => {
    await client.close();
    await mcp.close();
  });

  it("streams output as progress; a cancelled command is killed and the next call answers at once", async () => {
    const messages: string[] = [];
    const r = (await client.callTool({ name: "run_command", arguments: { command: "for i in 1 2 3 4; do echo line $i; sleep 0.5; done" } }, undefined, {
      timeout: 1200,
      resetTimeoutOnProgress: true,
      onprogress: (p) => void (p.message !== undefined && messages.push(p.message)),
    })) as CallToolResult;
    assert.equal(r.isError, false, textOf(r));
    assert.equal(messages.join(""), "line 1\nline 2\nline 3\nline 4\n");
    const ac = new AbortController();
    const t0 = performance.now();
    const cancelled = client.callTool({ name: "run_command", arguments: { command: "sleep 20", timeoutMs: 20_000 } }, undefined, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error("cancelled by the test")), 1500);
    await assert.rejects(cancelled, /cancelled by the test/);
    const next = (await client.callTool({ name: "run_command", arguments: { command: "echo alive" } })) as CallToolResult;
    assert.match(textOf(next), /^alive\n\[exit code\] 0$/);
    assert.ok(performance.now() - t0 < 10_000, "the cancelled command went on");
  });
});

describe("agentbox mcp options", () => {
  for (const [args, pattern] of [
    [["--memory", "10"], /--memory \(limits\.memoryMb\)/],
    [["--timeout", "0"], /--timeout \(limits\.timeoutMs\)/],
    [["--env", "1BAD=x"], /--env/],
    [["--tier", "bogus"], /--tier/],
  ] as const) {
    it(`exits 64 at start on ${args.join(" ")}`, async () => {
      const home = mkdtempSync(path.join(tmpdir(), "agentbox-mcp-home-"));
      try {
        const p = spawn(process.execPath, [BIN, "mcp", ...args], { env: { ...process.env, HOME: home }, stdio: ["pipe", "pipe", "pipe"] });
        let stderr = "";
        p.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        const [code] = (await once(p, "exit")) as [number | null];
        assert.equal(code, 64, stderr);
        assert.match(stderr, pattern);
      } finally {
        rmSync(home, { recursive: true, force: true });
      }
    });
  }
});
