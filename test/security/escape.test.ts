// The escape corpus: every known route from guest Python to the worker's JavaScript, the host's
// files, processes or network must be closed. Each test runs the route for real.
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { networkIsolation } from "../../src/engines/pool/netns.js";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";

const PROJECT_FILE = fileURLToPath(new URL("../../package.json", import.meta.url));

let sb: Sandbox;
before(async () => {
  sb = await Sandbox.create({ limits: { timeoutMs: 10_000 } });
});
after(async () => {
  await sb.kill();
});

/** Runs `code`; it must raise, and the error name must match. Returns the error. */
async function mustFail(code: string, name: RegExp) {
  const r = await sb.runCode(code);
  assert.ok(r.error, `expected an error, got value ${r.value} stdout ${r.stdout}`);
  assert.match(r.error.name, name, r.error.traceback);
  return r.error;
}

describe("security: the Python→JavaScript bridge is closed", () => {
  it("import js", async () => {
    await mustFail("import js", /ModuleNotFoundError/);
  });
  it("import pyodide_js", async () => {
    await mustFail("import pyodide_js", /ModuleNotFoundError/);
  });
  it("pyodide.code.run_js", async () => {
    await mustFail("from pyodide.code import run_js\nrun_js('globalThis.process.exit(3)')", /ModuleNotFoundError/);
  });
  it("to_js(...).constructor.constructor('return process')()", async () => {
    const e = await mustFail("from pyodide.ffi import to_js\nto_js({}).constructor.constructor('return process')()", /JsException/);
    assert.match(e.message, /Code generation from strings disallowed/);
  });
  it("a JS function built from a to_js'd callable cannot reach the global object either", async () => {
    await mustFail("from pyodide.ffi import to_js\nf = to_js(lambda: 1)\nf.constructor('return globalThis')()", /JsException/);
  });
  it("no live JavaScript proxies are reachable through the garbage collector", async () => {
    const r = await sb.runCode("import gc\nfrom pyodide.ffi import JsProxy\nsorted({type(o).__name__ for o in gc.get_objects() if isinstance(o, JsProxy)})");
    assert.equal(r.value, "[]");
  });
  it("pyodide.http", async () => {
    await mustFail("import pyodide.http\npyodide.http.pyfetch", /Error/);
  });
  it("micropip is not installable from the network", async () => {
    await mustFail("import micropip", /ModuleNotFoundError/);
  });
  it("ctypes cannot run JavaScript through emscripten_run_script", async () => {
    const r = await sb.runCode("import ctypes\nlib = ctypes.CDLL(None)\n(lib.emscripten_run_script_int(b'7'), lib.emscripten_run_script_int(b'globalThis.process.pid'))");
    assert.equal(r.value, "(0, 0)", r.error?.traceback);
    assert.equal((await sb.runCode("1 + 1")).value, "2", "the interpreter survives");
  });
});

describe("security: processes, network, host files", () => {
  it("os.system runs nothing", async () => {
    const marker = path.join(os.tmpdir(), `agentbox-pwned-${process.pid}`);
    const r = await sb.runCode(`import os\nos.system("touch ${marker}")`);
    assert.notEqual(r.value, "0");
    assert.equal(fs.existsSync(marker), false);
  });
  it("subprocess cannot start processes", async () => {
    await mustFail("import subprocess\nsubprocess.run(['id'])", /OSError|PermissionError|RuntimeError/);
  });
  it("sockets cannot connect, even to a listening port on 127.0.0.1", async () => {
    const server = net.createServer((c) => c.end("hello")).listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    const port = (server.address() as net.AddressInfo).port;
    let connected = false;
    server.on("connection", () => (connected = true));
    try {
      await mustFail(`import socket\ns = socket.create_connection(("127.0.0.1", ${port}), timeout=2)\ns.recv(5)`, /PermissionError|OSError/);
      await mustFail(`import urllib.request\nurllib.request.urlopen("http://127.0.0.1:${port}/").read()`, /URLError|OSError|PermissionError/);
      assert.equal(connected, false);
    } finally {
      server.close();
    }
  });
  it("the worker process itself lives in a network namespace of its own (second wall)", async (t) => {
    const iso = networkIsolation();
    if (iso.mode === "none") {
      t.skip(`network namespaces unavailable here: ${iso.reason}`);
      return;
    }
    const hostNs = fs.readlinkSync("/proc/self/ns/net");
    const workerNs = fs.readlinkSync(`/proc/${sb.pid}/ns/net`);
    assert.match(workerNs, /^net:\[\d+\]$/);
    assert.notEqual(workerNs, hostNs);
    // Only a down loopback inside: no interface with an address.
    const ifaces = fs.readFileSync(`/proc/${sb.pid}/net/dev`, "utf8").split("\n").slice(2).filter(Boolean).map((l) => l.split(":")[0]!.trim());
    assert.deepEqual(ifaces, ["lo"]);
  });
  it("/etc/passwd is not there", async () => {
    await mustFail("open('/etc/passwd').read()", /FileNotFoundError/);
  });
  it("the project's own files are not there, by absolute path or by climbing", async () => {
    await mustFail(`open(${JSON.stringify(PROJECT_FILE)}).read()`, /FileNotFoundError/);
    await mustFail("open('../../../../../../etc/hostname').read()", /FileNotFoundError/);
    const r = await sb.runCode("import os\nsorted(os.listdir('/'))");
    assert.doesNotMatch(r.value!, /'(etc|root|usr|work|var|proc\/self)'/);
  });
  it("files the guest writes stay in its memory, never on the host disk", async () => {
    const target = path.join(os.tmpdir(), `agentbox-write-${process.pid}.txt`);
    const r = await sb.runCode(`import os\nos.makedirs(${JSON.stringify(path.dirname(target))}, exist_ok=True)\nopen(${JSON.stringify(target)}, 'w').write('x')\nos.path.exists(${JSON.stringify(target)})`);
    assert.equal(r.value, "True");
    assert.equal(fs.existsSync(target), false);
  });
  it("the guest sees none of the worker's or host's environment", async () => {
    const r = await sb.runCode("import os\nsorted(os.environ)");
    assert.equal(r.value, "['HOME', 'LANG', 'TZ']");
  });
});

describe("security: resource exhaustion", () => {
  it("deep recursion is a RecursionError, not a crash", async () => {
    const e = await mustFail("def f(n):\n    return f(n + 1)\nf(0)", /RecursionError/);
    assert.match(e.message, /recursion/);
    assert.equal((await sb.runCode("6 * 7")).value, "42");
  });
  it("`while True: pass` is stopped by the time limit", async () => {
    const r = await sb.runCode("while True: pass", { timeoutMs: 200 });
    assert.equal(r.limitHit, "timeoutMs");
  });
  it("filling the VFS stops at the quota", async () => {
    await using small = await Sandbox.create({ limits: { vfsBytes: 1 << 20 } });
    const r = await small.runCode("i = 0\nwhile True:\n    with open(f'/tmp/fill{i}', 'wb') as f:\n        f.write(b'\\0' * 65536)\n    i += 1");
    assert.equal(r.limitHit, "vfsBytes");
    assert.equal(r.error?.name, "OSError");
  });
});
