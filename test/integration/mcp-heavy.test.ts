// `agentbox mcp --tier heavy` driven by the MCP SDK client: run_command and run_python share one
// heavy-tier session sandbox (started on first use), timeouts the session survives, a clear tool
// error when the heavy tier cannot start, and nothing left behind when the session ends.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { createMcpServer } from "../../src/mcp/index.js";
import { waitGone } from "../helpers.js";
import { ensureImage, leftovers, skipHeavy, waitFor } from "../heavy.js";
import { BIN, heavyBoxesOf } from "../server-helpers.js";

const textOf = (r: CallToolResult) => r.content.map((c) => (c.type === "text" ? c.text : "")).join("");

describe("agentbox mcp --tier heavy (stdio)", { skip: skipHeavy }, () => {
  let client: Client;
  let transport: StdioClientTransport;
  let stderr = "";
  const call = async (name: string, args: Record<string, unknown>) => (await client.callTool({ name, arguments: args })) as CallToolResult;

  before(async () => {
    await ensureImage();
    transport = new StdioClientTransport({ command: process.execPath, args: [BIN, "mcp", "--tier", "heavy", "--timeout", "10s", "--env", "WHO=mcp"], stderr: "pipe", env: { ...process.env } as Record<string, string> }); // the SDK passes only HOME, PATH, ... unless told: AGENTBOX_CACHE_DIR must reach the server
    transport.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
    client = new Client({ name: "agentbox-test", version: "0.0.0" });
    await client.connect(transport);
  });
  after(async () => {
    await client.close().catch(() => undefined);
  });

  it("lists run_command beside the run and file tools; no sandbox starts before a tool needs it", async () => {
    const names = (await client.listTools()).tools.map((t) => t.name).sort();
    assert.deepEqual(names, ["list_files", "read_file", "run_command", "run_javascript", "run_python", "write_file"]);
    assert.deepEqual(heavyBoxesOf(transport.pid!), []);
  });

  it("run_command returns output and exit code; run_python and the file tools see the same Linux sandbox", async () => {
    const ok = await call("run_command", { command: "echo hi $WHO; echo warn >&2" });
    assert.equal(ok.isError, false, textOf(ok));
    assert.equal(textOf(ok), "hi mcp\n[stderr]\nwarn\n[exit code] 0");
    assert.deepEqual(ok.structuredContent && { ...ok.structuredContent, durationMs: 0 }, { exitCode: 0, stdout: "hi mcp\n", stderr: "warn\n", durationMs: 0 });
    const bad = await call("run_command", { command: "ls /nope" });
    assert.equal(bad.isError, true);
    assert.match(textOf(bad), /No such file or directory\n\[exit code\] 2$/);
    assert.equal((await call("write_file", { path: "/home/user/in.txt", content: "abc" })).isError, undefined);
    assert.equal(textOf(await call("run_command", { command: "tr a-z A-Z < in.txt > out.txt && cat out.txt", cwd: "/home/user" })), "ABC\n[exit code] 0");
    assert.equal(textOf(await call("run_python", { code: "import platform; open('/home/user/out.txt').read() + platform.system()" })), "[value] 'ABCLinux'");
    assert.equal(textOf(await call("read_file", { path: "/home/user/out.txt" })), "ABC");
    assert.equal(heavyBoxesOf(transport.pid!).length, 1, "one heavy session sandbox");
  });

  it("a command past timeoutMs is killed (limit hit, output so far); the session sandbox lives on", async () => {
    const r = await call("run_command", { command: "echo before; sleep 30", timeoutMs: 400 });
    assert.equal(r.isError, true);
    assert.equal(textOf(r), "before\n[limit hit] limits.timeoutMs: the command was killed\n[exit code] 137 (SIGKILL)");
    assert.equal((r.structuredContent as { limitHit: string }).limitHit, "timeoutMs");
    assert.equal(textOf(await call("run_command", { command: "cat out.txt" })), "ABC\n[exit code] 0");
  });

  it("closing the session removes the heavy sandbox (container, cgroups, state dir) and the server exits", async () => {
    const pid = transport.pid!;
    const boxes = heavyBoxesOf(pid);
    assert.equal(boxes.length, 1);
    await client.close();
    await waitGone(pid, 15_000);
    assert.ok(await waitFor(() => leftovers(boxes[0]!).processes.length === 0));
    assert.deepEqual(leftovers(boxes[0]!), { processes: [], dir: false, cgroups: [] });
    assert.doesNotMatch(stderr, /Error/);
  });
});

describe("MCP run_command where the heavy tier cannot start", () => {
  it("is a tool error naming the cause; the other tools still work", async () => {
    // An image that was never built is one way the heavy tier is unavailable (no runsc is another).
    const mcp = createMcpServer({ sandbox: { tier: "heavy", packages: ["agentbox-never-built"] } });
    const [a, b] = InMemoryTransport.createLinkedPair();
    const client = new Client({ name: "t", version: "0" });
    await Promise.all([mcp.server.connect(a), client.connect(b)]);
    try {
      const r = (await client.callTool({ name: "run_command", arguments: { command: "true" } })) as CallToolResult;
      assert.equal(r.isError, true);
      assert.match(textOf(r), /^TierUnavailableError \[TIER_UNAVAILABLE\]: /);
      const js = (await client.callTool({ name: "run_javascript", arguments: { code: "1 + 2" } })) as CallToolResult;
      assert.match(textOf(js), /\[value\] 3|TIER_UNAVAILABLE/); // JavaScript stays on the nano tier
    } finally {
      await client.close();
      await mcp.close();
    }
  });
});
