// Rich results as they happen: runCode's onResult on every engine (a result reaches the caller
// while the run is still going, in order with the output around it, and the same results end up
// in RunResult.results), the HTTP API's `display` SSE events over a real socket, and the CLI
// writing each result to a file (--results-dir, or a fresh temporary directory).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox, type DisplayResult, type RunResult } from "../../src/index.js";
import { KeyRing, startServer, type RunningServer } from "../../src/server/index.js";
import { agentboxEnv } from "../helpers.js";
import { gvisor } from "../conformance/heavy.js";
import { ensureImage, skipHeavy } from "../heavy.js";

const BIN = fileURLToPath(new URL("../../bin/agentbox.js", import.meta.url));
const PNG_SIGNATURE = Buffer.from("89504e470d0a1a0a", "hex");
/** How long the guest sleeps after its first result; the result must arrive well before the end. */
const SLEEP_S = 0.8;

/** A cell that prints, displays, sleeps, prints, and ends on a rich value (PNG + text). */
const PY_CELL = [
  "import time",
  "print('before')",
  "display('<i>x</i>')",
  `time.sleep(${SLEEP_S})`,
  "print('after')",
  "class Pic:",
  "    def _repr_png_(self): return bytes.fromhex('89504e470d0a1a0a')",
  "    def __repr__(self): return 'Pic()'",
  "Pic()",
].join("\n");

interface Seen {
  events: string[];
  results: { result: DisplayResult; atMs: number; runEnded: boolean }[];
  endMs: number;
  r: RunResult;
}

/** Run `code`, recording output, results and when each arrived. */
async function follow(sb: Sandbox, code: string): Promise<Seen> {
  const events: string[] = [];
  const results: Seen["results"] = [];
  let runEnded = false;
  const t0 = performance.now();
  const r = await sb.runCode(code, {
    onStdout: (s) => events.push(`out:${s}`),
    onResult: (result) => {
      results.push({ result, atMs: performance.now() - t0, runEnded });
      events.push(`result:${Object.keys(result.data).join(",")}`);
    },
  });
  runEnded = true;
  return { events, results, endMs: performance.now() - t0, r };
}

/** The first result came while the guest still slept, not with the run's end. */
function assertStreamed(s: Seen): void {
  assert.ok(s.results.length > 0, "onResult was called");
  assert.equal(s.results.some((x) => x.runEnded), false, "every result came before runCode resolved");
  const lead = s.endMs - s.results[0]!.atMs;
  assert.ok(lead > SLEEP_S * 1000 * 0.6, `first result at ${s.results[0]!.atMs.toFixed(0)} ms, run ended at ${s.endMs.toFixed(0)} ms`);
  assert.deepEqual(s.results.map((x) => x.result), s.r.results, "onResult saw exactly the final results, in order");
}

function checkPythonCell(s: Seen): void {
  assertStreamed(s);
  assert.deepEqual(s.r.results, [
    { data: { "text/plain": "'<i>x</i>'" }, main: false },
    { data: { "image/png": PNG_SIGNATURE.toString("base64"), "text/plain": "Pic()" }, main: true },
  ]);
  // Output printed before a result reaches the caller before it, and after it, after.
  assert.deepEqual(s.events, ["out:before\n", "result:text/plain", "out:after\n", "result:image/png,text/plain"]);
  assert.equal(s.r.value, "Pic()");
}

describe("onResult: each result as it happens", () => {
  it("nano Python", async () => {
    await using sb = await Sandbox.create({ language: "python", clock: "real" });
    checkPythonCell(await follow(sb, PY_CELL));
    // Results that do not fit are dropped before the caller sees them (the host's checks come first).
    const small = await follow(sb, "display({'text/html': 'x' * 2_000_000}, raw=True)\ndisplay('ok')");
    assert.deepEqual(small.results.map((x) => x.result), [{ data: { "text/plain": "'ok'" }, main: false }]);
    assert.equal(small.r.limitHit, "outputBytes");
  });

  it("nano Python: the display descriptor is hostile input like any other (the guest can find it and write anything)", async () => {
    await using sb = await Sandbox.create({ language: "python" });
    const r = await sb.runCode(
      [
        "import os, sys",
        "state = [c.cell_contents for c in sys.modules['_agentbox'].run.__closure__ if isinstance(c.cell_contents, dict) and 'display_fd' in c.cell_contents][0]",
        "fd = state['display_fd']",
        "os.write(fd, b'not json\\n')",
        "os.write(fd, b'{\"data\": {\"text/html\": 5}, \"main\": false}\\n')",
        "os.write(fd, b'{\"data\": {\"text/plain\": \"direct\"}, \"main\": false}\\n{\"data\"')",
        "os.write(fd, b'x' * 10_000_000)",
        "print('alive')",
      ].join("\n"),
    );
    assert.equal(r.error, undefined);
    assert.equal(r.stdout, "alive\n");
    // A well-formed line is just what display() would have sent; the unfinished one is dropped.
    assert.deepEqual(r.results, [{ data: { "text/plain": "direct" }, main: false }]);
    assert.match(r.stderr, /a malformed result was dropped: not JSON/);
    assert.match(r.stderr, /a malformed result was dropped: text\/html data must be a string/);
    assert.match(r.stderr, /a result of over \d+ bytes did not fit in the output limit/);
    assert.equal(r.limitHit, "outputBytes");
    assert.deepEqual((await sb.runCode("display('next')")).results, [{ data: { "text/plain": "'next'" }, main: false }]);
  });

  it("nano JavaScript", async () => {
    await using sb = await Sandbox.create({ language: "javascript", clock: "real" });
    const s = await follow(
      sb,
      [
        `console.log("before")`,
        `display("<b>x</b>", "text/html")`,
        `await new Promise((r) => setTimeout(r, ${SLEEP_S * 1000}))`,
        `console.log("after")`,
        `display({ a: 1 })`,
      ].join("\n"),
    );
    assertStreamed(s);
    assert.deepEqual(s.r.results, [
      { data: { "text/html": "<b>x</b>" }, main: false },
      { data: { "text/plain": '{"a":1}', "application/json": '{"a":1}' }, main: false },
    ]);
    assert.deepEqual(s.events, ["out:before\n", "result:text/html", "out:after\n", "result:text/plain,application/json"]);
  });

  describe("heavy tier (gVisor)", { skip: skipHeavy }, () => {
    before(() => ensureImage());

    it("the REPL sends each result as it happens; the agent forwards it with the run id", async () => {
      await using sb = await Sandbox.create(gvisor.opts);
      checkPythonCell(await follow(sb, PY_CELL));
      // A result planted in the REPL's list (never sent as it happened) still comes, checked, at the end.
      const planted = await follow(
        sb,
        [
          "import builtins",
          "add = [c.cell_contents for c in builtins.display.__closure__ if getattr(c.cell_contents, '__name__', '') == 'add'][0]",
          "run = [c.cell_contents for c in add.__closure__ if isinstance(c.cell_contents, dict)][0]",
          "run['results'].append({'data': {'text/markdown': '# late'}, 'main': False})",
          "run['results'].append({'data': {'image/png': '!!'}, 'main': False})",
          "display('now')",
        ].join("\n"),
      );
      assert.deepEqual(planted.r.results, [
        { data: { "text/plain": "'now'" }, main: false },
        { data: { "text/markdown": "# late" }, main: false },
      ]);
      assert.match(planted.r.stderr, /a malformed result was dropped: image\/png data must be base64/);
    });
  });
});

describe("HTTP: `display` events on /run/stream", () => {
  const KEY = "key-stream-0123456789abcdef";
  let server: RunningServer;
  before(async () => {
    server = await startServer({ port: 0, keys: KeyRing.fromEntries([{ name: "a", key: KEY }]), poolSize: 0, log: () => undefined });
  });
  after(async () => {
    await server.close();
  });

  it("each result is a `display` event as it happens; the final `result` event still holds them all", async () => {
    const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
    const created = await fetch(`${server.url}/sandboxes`, { method: "POST", headers, body: JSON.stringify({ language: "python", clock: "real" }) });
    assert.equal(created.status, 201);
    const { id } = (await created.json()) as { id: string };
    const t0 = performance.now();
    const res = await fetch(`${server.url}/sandboxes/${id}/run/stream`, { method: "POST", headers, body: JSON.stringify({ code: PY_CELL }) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const events: { event: string; data: unknown; atMs: number }[] = [];
    let buf = "";
    const dec = new TextDecoder();
    for await (const chunk of res.body!) {
      buf += dec.decode(chunk as Uint8Array, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
        events.push({ event, data: JSON.parse(/^data: (.*)$/m.exec(block)![1]!) as unknown, atMs: performance.now() - t0 });
      }
    }
    assert.deepEqual(events.map((e) => e.event), ["stdout", "display", "stdout", "display", "result"]);
    const displays = events.filter((e) => e.event === "display");
    const result = events.at(-1)!.data as RunResult;
    assert.deepEqual(displays.map((e) => e.data), result.results);
    assert.deepEqual(displays[0]!.data, { data: { "text/plain": "'<i>x</i>'" }, main: false });
    assert.equal((displays[1]!.data as DisplayResult).main, true);
    const lead = events.at(-1)!.atMs - displays[0]!.atMs;
    assert.ok(lead > SLEEP_S * 1000 * 0.6, `first display at ${displays[0]!.atMs.toFixed(0)} ms, result at ${events.at(-1)!.atMs.toFixed(0)} ms`);
    await fetch(`${server.url}/sandboxes/${id}`, { method: "DELETE", headers });
  });

  it("the OpenAPI document names the event", async () => {
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as { paths: Record<string, { post: { responses: Record<string, { description: string; content: Record<string, { "x-events": Record<string, unknown> }> }> } }> };
    const ok = doc.paths["/sandboxes/{id}/run/stream"]!.post.responses["200"]!;
    assert.match(ok.description, /`display` events/);
    assert.deepEqual(ok.content["text/event-stream"]!["x-events"].display, { $ref: "#/components/schemas/DisplayResult" });
    assert.equal("display" in doc.paths["/sandboxes/{id}/commands/stream"]!.post.responses["200"]!.content["text/event-stream"]!["x-events"], false);
  });
});

/** A valid 1x1 PNG made by the guest with the standard library, shown as raw bytes. */
const PNG_CELL = [
  "import struct, zlib",
  "def chunk(kind, body): return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))",
  "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 1, 1, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(b'\\x00\\xff\\x00\\x00')) + chunk(b'IEND', b'')",
  "display({'image/png': png}, raw=True)",
  "class Page:",
  "    def _repr_html_(self): return '<h1>hi</h1>'",
  "display(Page(), {'a': 1})",
  "print('done')",
].join("\n");

describe("CLI: agentbox run writes each result to a file", () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000, env: agentboxEnv() });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-test-results-"));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  function checkFiles(dir: string): void {
    const png = fs.readFileSync(path.join(dir, "result-1.png"));
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
    assert.equal(png.subarray(12, 16).toString("latin1"), "IHDR");
    assert.equal(png.subarray(-8, -4).toString("latin1"), "IEND");
    assert.equal(fs.readFileSync(path.join(dir, "result-2.html"), "utf8"), "<h1>hi</h1>");
    assert.equal(fs.readFileSync(path.join(dir, "result-3.txt"), "utf8"), "{'a': 1}");
    assert.deepEqual(fs.readdirSync(dir).sort(), ["result-1.png", "result-2.html", "result-3.txt"]);
  }

  it("--results-dir DIR: the richest form of each result, decoded, and one line per result on stderr", () => {
    const dir = path.join(tmp, "given", "nested");
    const r = cli("run", "-c", PNG_CELL, "--results-dir", dir);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "done\n");
    checkFiles(dir);
    assert.deepEqual(r.stderr.trim().split("\n"), [
      `agentbox: result 1 (image/png): ${path.join(dir, "result-1.png")}`,
      `agentbox: result 2 (text/html, text/plain): ${path.join(dir, "result-2.html")}`,
      `agentbox: result 3 (text/plain): ${path.join(dir, "result-3.txt")}`,
    ]);
  });

  it("without --results-dir: a fresh directory under the temporary directory, only when there are results", () => {
    const r = cli("run", "-c", PNG_CELL);
    assert.equal(r.status, 0, r.stderr);
    const m = /^agentbox: result 1 \(image\/png\): (.+)\/result-1\.png$/m.exec(r.stderr);
    assert.ok(m, r.stderr);
    const dir = m[1]!;
    try {
      assert.equal(path.dirname(dir), os.tmpdir());
      assert.match(path.basename(dir), /^agentbox-results-/);
      checkFiles(dir);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const none = cli("run", "-c", "print(1)");
    assert.equal(none.status, 0);
    assert.equal(none.stderr, "");
  });

  it("--json: the written paths beside the results, and no lines on stderr", () => {
    const dir = path.join(tmp, "json");
    const r = cli("run", "--json", "-c", PNG_CELL, "--results-dir", dir);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, "");
    const out = JSON.parse(r.stdout) as RunResult & { resultsDir: string; resultFiles: string[] };
    assert.equal(out.resultsDir, dir);
    assert.deepEqual(out.resultFiles, ["result-1.png", "result-2.html", "result-3.txt"].map((f) => path.join(dir, f)));
    assert.equal(out.results?.length, 3);
    checkFiles(dir);
  });

  it("a symlink in DIR where a result goes is not followed: nothing is written outside DIR", () => {
    const dir = path.join(tmp, "trap");
    fs.mkdirSync(dir);
    const outside = path.join(tmp, "outside.txt");
    fs.writeFileSync(outside, "untouched");
    fs.symlinkSync(outside, path.join(dir, "result-1.png"));
    const r = cli("run", "-c", PNG_CELL, "--results-dir", dir);
    assert.equal(r.status, 70, r.stderr);
    assert.match(r.stderr, /cannot write result 1: .*ELOOP/);
    assert.equal(fs.readFileSync(outside, "utf8"), "untouched");
    assert.ok(fs.existsSync(path.join(dir, "result-2.html")), "the other results are still written");
  });

  it("a --results-dir that cannot be made is a usage error before anything runs", () => {
    const file = path.join(tmp, "a-file");
    fs.writeFileSync(file, "");
    const r = cli("run", "-c", "print('ran')", "--results-dir", path.join(file, "sub"));
    assert.equal(r.status, 64);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /--results-dir: cannot make .*ENOTDIR/);
  });
});
