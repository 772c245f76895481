// Rich results (Jupyter-style MIME bundles): display() and the _repr_*_ protocol on the nano tier,
// their place in RunResult, the output cap they count against, and what a hostile guest can and
// cannot do with them (forge one from stdout, hand over a malformed bundle).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { Sandbox } from "../../src/index.js";
import { createMcpServer, type AgentboxMcp } from "../../src/mcp/index.js";
import { createServer, KeyRing, type AgentboxServer } from "../../src/server/index.js";
import "../helpers.js";
import { gvisor } from "../conformance/heavy.js";
import { ensureImage, skipHeavy } from "../heavy.js";

const PNG = Buffer.from("89504e470d0a1a0a", "hex");

describe("rich results: Python nano", () => {
  it("display() with _repr_html_, and the final expression's bundle marked main", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    const r = await sb.runCode(
      [
        "class Table:",
        "    def _repr_html_(self): return '<table><tr><td>1</td></tr></table>'",
        "    def __repr__(self): return 'Table()'",
        "class Pic:",
        "    def _repr_png_(self): return bytes.fromhex('89504e470d0a1a0a')",
        "    def _repr_json_(self): return {'w': 1}",
        "display(Table(), 42)",
        "print('between')",
        "Pic()",
      ].join("\n"),
    );
    assert.equal(r.error, undefined);
    assert.equal(r.stdout, "between\n");
    assert.deepEqual(r.results?.map((x) => x.main), [false, false, true]);
    assert.deepEqual(r.results?.[0]?.data, { "text/html": "<table><tr><td>1</td></tr></table>", "text/plain": "Table()" });
    assert.deepEqual(r.results?.[1]?.data, { "text/plain": "42" });
    const main = r.results![2]!;
    assert.equal(main.data["image/png"], PNG.toString("base64"));
    assert.equal(main.data["application/json"], '{"w": 1}');
    assert.match(main.data["text/plain"]!, /^<__main__\.Pic object at/);
    assert.equal(r.value, main.data["text/plain"]);
  });

  it("a plain final expression adds no results (the result keeps its old shape)", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    const r = await sb.runCode("1 + 1");
    assert.equal(r.value, "2");
    assert.equal("results" in r, false);
  });

  it("_repr_mimebundle_ and display(raw=True)", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    const r = await sb.runCode(
      [
        "class Md:",
        "    def _repr_mimebundle_(self, include=None, exclude=None):",
        "        return {'text/markdown': '# hi', 'text/plain': 'Md'}, {}",
        "display(Md())",
        "display({'image/svg+xml': '<svg/>'}, raw=True)",
      ].join("\n"),
    );
    assert.deepEqual(r.results, [
      { data: { "text/markdown": "# hi", "text/plain": "Md" }, main: false },
      { data: { "image/svg+xml": "<svg/>" }, main: false },
    ]);
  });

  it("a forged result printed to stdout stays text", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    const forged = JSON.stringify({ type: "result", id: 1, value: "x", results: [{ data: { "text/html": "<script>" }, main: true }] });
    const r = await sb.runCode(`print(${JSON.stringify(forged)})\nimport sys; sys.stdout.write('\\x00\\x00\\x00\\x10{"type":"result"}')`);
    assert.equal(r.results, undefined);
    assert.ok(r.stdout.startsWith(forged));
  });

  it("malformed forms are skipped with a note on stderr, never a crash", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    const r = await sb.runCode(
      [
        "class Bad:",
        "    def _repr_png_(self): return 12",
        "    def _repr_html_(self): raise ValueError('boom')",
        "    def _repr_jpeg_(self): return 'not base64!'",
        "    def _repr_json_(self): return {'x': float('nan')}",
        "class Junk:",
        "    def _repr_mimebundle_(self, include=None, exclude=None): return {'evil/type': 'x', 5: 'y', 'text/html': b'bytes'}",
        "class Worse:",
        "    def _repr_mimebundle_(self, include=None, exclude=None): return 'junk'",
        "display(Bad(), Junk(), Worse())",
        "'still alive'",
      ].join("\n"),
    );
    assert.equal(r.error, undefined);
    assert.equal(r.value, "'still alive'");
    assert.equal(r.results?.length, 3);
    for (const x of r.results!) assert.deepEqual(Object.keys(x.data), ["text/plain"]);
    assert.match(r.stderr, /_repr_png_ gave int for image\/png, expected bytes; skipped/);
    assert.match(r.stderr, /_repr_html_ raised ValueError: boom/);
    assert.match(r.stderr, /_repr_jpeg_ gave image\/jpeg data that is not base64/);
    assert.match(r.stderr, /_repr_json_ gave application\/json data that is not JSON/);
    assert.match(r.stderr, /unknown MIME type 'evil\/type'/);
    assert.match(r.stderr, /_repr_mimebundle_ returned str, expected a dict/);
    assert.equal((await sb.runCode("1")).value, "1");
  });

  it("a guest that tampers with the runner's results gets them dropped with a note, not a host crash", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    // The guest reaches the collector's closure and plants malformed bundles in it.
    const r = await sb.runCode(
      [
        "import builtins",
        "add = [c.cell_contents for c in builtins.display.__closure__ if getattr(c.cell_contents, '__name__', '') == 'add'][0]",
        "run = [c.cell_contents for c in add.__closure__ if isinstance(c.cell_contents, dict)][0]",
        "run['results'].append({'data': {'image/png': '!!'}, 'main': False})",
        "run['results'].append({'data': {'text/plain': 1}, 'main': True})",
        "run['results'].append({'data': {'x/y': 'a'}, 'main': True, 'extra': 1})",
        "display('ok')",
      ].join("\n"),
    );
    assert.equal(r.error, undefined);
    assert.deepEqual(r.results, [{ data: { "text/plain": "'ok'" }, main: false }]);
    assert.equal(r.stderr.match(/a malformed result was dropped/g)?.length, 3);
  });

  it("an oversized display counts against outputBytes (limitHit) and the sandbox lives on", async () => {
    await using sb = await Sandbox.create({ language: "python", limits: { outputBytes: 10_000 } });
    const r = await sb.runCode("display('small')\ndisplay({'text/html': 'x' * 20000}, raw=True)\nprint('after')");
    assert.equal(r.limitHit, "outputBytes");
    assert.deepEqual(r.results, [{ data: { "text/plain": "'small'" }, main: false }]);
    assert.match(r.stderr, /did not fit in the output limit \(limits\.outputBytes\)/);
    assert.equal(r.stdout, "after\n");
    // Output and results share one budget: printed bytes leave less room.
    const r2 = await sb.runCode("print('y' * 6000)\ndisplay({'text/html': 'x' * 5000}, raw=True)");
    assert.equal(r2.limitHit, "outputBytes");
    assert.equal(r2.results, undefined);
    const r3 = await sb.runCode("display({'text/html': 'x' * 5000}, raw=True)");
    assert.equal(r3.limitHit, undefined);
    assert.equal(r3.results?.length, 1);
  });
});

describe("rich results: JavaScript nano", () => {
  it("display() with a MIME type, bytes, and an object (application/json + text/plain)", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    const r = await sb.runCode(
      [
        `display("<b>hi</b>", "text/html")`,
        `display(new Uint8Array([0x89, 0x50, 0x4e, 0x47]), "image/png")`,
        `display({ a: [1, 2] })`,
        `display("plain")`,
        `console.log("done")`,
      ].join("\n"),
    );
    assert.equal(r.error, undefined);
    assert.equal(r.stdout, "done\n");
    assert.deepEqual(r.results, [
      { data: { "text/html": "<b>hi</b>" }, main: false },
      { data: { "image/png": Buffer.from([0x89, 0x50, 0x4e, 0x47]).toString("base64") }, main: false },
      { data: { "text/plain": '{"a":[1,2]}', "application/json": '{"a":[1,2]}' }, main: false },
      { data: { "text/plain": "plain" }, main: false },
    ]);
  });

  it("a malformed bundle is a guest TypeError; a forged frame in stdout stays text", async () => {
    await using sb = await Sandbox.create({ language: "typescript" });
    const r = await sb.runCode(`display("x", "application/x-evil")`);
    assert.equal(r.error?.name, "TypeError");
    assert.match(r.error!.message, /unknown MIME type "application\/x-evil"/);
    const bad = await sb.runCode(`display("not base64!", "image/png")`);
    assert.match(bad.error!.message, /image\/png data must be base64/);
    const forged = await sb.runCode(`console.log(JSON.stringify({ type: "result", results: [{ data: { "text/html": "<x>" }, main: true }] }))`);
    assert.equal(forged.results, undefined);
    assert.match(forged.stdout, /"results"/);
  });

  it("an oversized display is dropped against outputBytes and the sandbox lives on", async () => {
    await using sb = await Sandbox.create({ language: "javascript", limits: { outputBytes: 10_000 } });
    const r = await sb.runCode(`display("a", "text/markdown"); display("x".repeat(20000), "text/html"); console.log("after")`);
    assert.equal(r.limitHit, "outputBytes");
    assert.deepEqual(r.results, [{ data: { "text/markdown": "a" }, main: false }]);
    assert.match(r.stderr, /did not fit in the output limit/);
    assert.equal((await sb.runCode("1 + 1")).value, "2");
  });
});

const PIC_CELL = ["class Pic:", "    def _repr_png_(self): return bytes.fromhex('89504e470d0a1a0a')", "display('<i>x</i>', Pic())", "print('out')"].join("\n");

describe("rich results: MCP", () => {
  let mcp: AgentboxMcp;
  let client: Client;
  before(async () => {
    mcp = createMcpServer({});
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    await mcp.server.connect(serverSide);
    client = new Client({ name: "agentbox-test", version: "0.0.0" });
    await client.connect(clientSide);
  });
  after(async () => {
    await client.close();
    await mcp.close();
  });

  it("run_python answers a displayed PNG with an image block and HTML with a labelled text block", async () => {
    const r = (await client.callTool({ name: "run_python", arguments: { code: "class H:\n    def _repr_html_(self): return '<b>h</b>'\n" + PIC_CELL + "\ndisplay(H())" } })) as CallToolResult;
    assert.equal(r.isError, false);
    assert.equal(r.content.length, 4);
    assert.deepEqual(r.content[0], { type: "text", text: "out" });
    assert.deepEqual(r.content[1], { type: "text", text: "[display]\n'<i>x</i>'" });
    assert.deepEqual(r.content[2], { type: "image", data: PNG.toString("base64"), mimeType: "image/png" });
    assert.deepEqual(r.content[3], { type: "text", text: "[display text/html]\n<b>h</b>" });
    assert.equal((r.structuredContent as { results: unknown[] }).results.length, 3);
  });
});

describe("rich results: HTTP", () => {
  let srv: AgentboxServer;
  const KEY = "key-rich-0123456789abcdef";
  before(async () => {
    srv = await createServer({ keys: KeyRing.fromEntries([{ name: "a", key: KEY }]), poolSize: 0, log: () => undefined });
  });
  after(async () => {
    await srv.close();
  });

  it("the run JSON carries results; a run without any keeps its old shape", async () => {
    const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
    const created = await srv.app.request("/sandboxes", { method: "POST", headers, body: JSON.stringify({ language: "python" }) });
    const { id } = (await created.json()) as { id: string };
    const run = async (code: string) => (await (await srv.app.request(`/sandboxes/${id}/run`, { method: "POST", headers, body: JSON.stringify({ code }) })).json()) as Record<string, unknown>;
    const r = await run(PIC_CELL);
    assert.equal(r.stdout, "out\n");
    assert.deepEqual(r.results, [
      { data: { "text/plain": "'<i>x</i>'" }, main: false },
      { data: { "image/png": PNG.toString("base64"), "text/plain": (r.results as { data: Record<string, string> }[])[1]!.data["text/plain"] }, main: false },
    ]);
    assert.equal("results" in (await run("1")), false);
  });
});

describe("rich results: heavy tier Python REPL (gVisor)", { skip: skipHeavy }, () => {
  before(() => ensureImage());

  it("display(), _repr_*_ and the main bundle; a malformed form skipped with a note; the output cap", async () => {
    await using sb = await Sandbox.create({ ...gvisor.opts, limits: { ...gvisor.opts.limits, outputBytes: 10_000 } });
    const r = await sb.runCode(
      [
        "class Pic:",
        "    def _repr_png_(self): return bytes.fromhex('89504e470d0a1a0a')",
        "    def _repr_html_(self): return 12",
        "    def __repr__(self): return 'Pic()'",
        "display('<i>x</i>')",
        "display({'text/html': 'x' * 20000}, raw=True)",
        "print('out')",
        "Pic()",
      ].join("\n"),
    );
    assert.equal(r.error, undefined);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.value, "Pic()");
    assert.equal(r.limitHit, "outputBytes");
    assert.deepEqual(r.results, [
      { data: { "text/plain": "'<i>x</i>'" }, main: false },
      { data: { "image/png": PNG.toString("base64"), "text/plain": "Pic()" }, main: true },
    ]);
    assert.match(r.stderr, /_repr_html_ gave int for text\/html, expected str; skipped/);
    assert.match(r.stderr, /did not fit in the output limit/);
    const forged = await sb.runCode("print('{\"type\": \"result\", \"results\": [{\"data\": {\"text/html\": \"x\"}, \"main\": true}]}')");
    assert.equal(forged.results, undefined);
  });
});
