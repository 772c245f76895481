// The JavaScript escape corpus: guest code in QuickJS must reach nothing of the worker's realm or
// the host (no process, require, host modules, code generation into Node's realm), must not be
// able to poison what the host receives, and must be stopped by every limit. Each route runs for real.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import { isAlive, waitGone } from "../helpers.js";

let sb: Sandbox;
before(async () => {
  sb = await Sandbox.create({ language: "javascript", limits: { timeoutMs: 10_000, memoryMb: 64 } });
});
after(async () => {
  await sb.kill();
});

async function value(code: string, opts: { timeoutMs?: number } = {}): Promise<string | undefined> {
  const r = await sb.runCode(code, opts);
  assert.equal(r.error, undefined, r.error?.traceback);
  return r.value;
}

describe("security (js): nothing of the host is reachable", () => {
  it("no process, require, module, Buffer, host globals", async () => {
    assert.equal(
      await value("[typeof process, typeof require, typeof module, typeof Buffer, typeof __dirname, typeof WebAssembly, typeof fetch, typeof std, typeof os]"),
      JSON.stringify(Array(9).fill("undefined")),
    );
  });

  it("globalThis.constructor chains end in the QuickJS realm", async () => {
    const v = await value("const F = globalThis.constructor.constructor;\nconst g = F('return this')();\n[g === globalThis, F('return typeof process')(), typeof ({}).constructor.constructor('return globalThis.require')()]");
    assert.equal(v, '[true,"undefined","undefined"]');
  });

  it("Function and eval compile guest code inside QuickJS, never in Node's realm", async () => {
    const v = await value("[eval('typeof process'), Function('return typeof require')(), (0, eval)('this') === globalThis, new Function('a', 'return a * 2')(21)]");
    assert.equal(v, '["undefined","undefined",true,42]');
  });

  it("host modules cannot be imported, statically or dynamically", async () => {
    for (const code of ["import cp from 'child_process'", "import { readFileSync } from 'node:os'", "await import('node:child_process')"]) {
      const r = await sb.runCode(code);
      assert.ok(r.error, `expected ${code} to fail`);
      assert.match(r.error.message, /Cannot find module|could not load module|child_process|os/);
    }
  });

  it("the guest's fs is the sandbox's VFS, not the host's disk", async () => {
    const r = await sb.runCode("import fs from 'fs';\nfs.readFileSync('/etc/passwd', 'utf8')");
    assert.match(r.error!.message, /^ENOENT/);
    const target = path.join(os.tmpdir(), `agentbox-js-write-${process.pid}.txt`);
    assert.equal(await value(`fs.mkdirSync(${JSON.stringify(path.dirname(target))}, { recursive: true });\nfs.writeFileSync(${JSON.stringify(target)}, 'x');\nfs.existsSync(${JSON.stringify(target)})`), "true");
    assert.equal(fs.existsSync(target), false);
    assert.equal(await value("fs.readdirSync('/').join(',')"), '"home,tmp"');
  });

  it("stack traces of host functions do not leak the worker's files", async () => {
    const r = await sb.runCode("import fs from 'fs';\nfs.readFileSync('/none')");
    assert.doesNotMatch(r.error!.traceback, /dist\/|node_modules|\.js:\d+:\d+\)\n.*<agentbox>/);
  });
});

describe("security (js): prototype pollution stays in the guest", () => {
  it("polluting Object/Array/JSON in the guest does not change what the host receives", async () => {
    await using p = await Sandbox.create({ language: "javascript" });
    await p.files.write("/in.txt", "host data");
    const r = await p.runCode(
      "Object.prototype.polluted = 'yes';\nObject.prototype.toJSON = function () { return 'hijacked' };\nArray.prototype.push = () => { throw new Error('no') };\nJSON.stringify = () => 'forged';\nString.prototype.slice = () => 'forged';\nimport fs from 'fs';\nconsole.log(fs.readFileSync('/in.txt', 'utf8'));\nfs.writeFileSync('/out.txt', 'guest data');\n({ a: 1 })",
    );
    assert.equal(r.stdout, "host data\n");
    assert.equal(r.value, '"hijacked"', "the display of the value is the guest's own business (its toJSON)");
    assert.equal(Object.getPrototypeOf(r), Object.prototype);
    assert.equal(({} as Record<string, unknown>).polluted, undefined, "the host's prototypes are untouched");
    assert.deepEqual(Object.keys(r).sort(), ["durationMs", "exitCode", "seed", "stderr", "stdout", "tier", "value", "vfsDigest"]);
    assert.equal(await p.files.read("/out.txt"), "guest data");
    assert.deepEqual((await p.files.list("/")).map((e) => e.name), ["home", "in.txt", "out.txt", "tmp"]);
  });

  it("host functions check their arguments: objects with hostile getters/toString are refused", async () => {
    const r = await sb.runCode("import fs from 'fs';\nconst evil = { toString() { throw new Error('called') } };\nlet out = [];\nfor (const f of [() => fs.readFileSync(evil), () => fs.writeFileSync('/tmp/x', 1, evil), () => fs.renameSync('/tmp/x', evil)]) {\n  try { f(); out.push('ok') } catch (e) { out.push(e.name + ':' + e.message) }\n}\nout");
    assert.equal(r.error, undefined, r.error?.traceback);
    const out = JSON.parse(r.value!) as string[];
    assert.match(out[0]!, /TypeError/);
    assert.equal(out[1], "ok", "data is converted by String() in the guest");
    assert.match(out[2]!, /TypeError/);
  });
});

describe("security (js): exhaustion", () => {
  it("infinite loops, also in promise jobs and timers, hit the time limit", async () => {
    for (const code of ["while (true) {}", "await Promise.resolve().then(() => { for (;;) {} })", "setTimeout(function f() { setTimeout(f, 0) }, 0)", "setInterval(() => {}, 1)"]) {
      const r = await sb.runCode(code, { timeoutMs: 300 });
      assert.equal(r.limitHit, "timeoutMs", code);
    }
    assert.equal(await value("1 + 1"), "2");
  });

  it("memory bombs stop at the cap", async () => {
    for (const code of [
      "(() => { const a = []; while (true) a.push({ x: Math.random() }) })()",
      "(() => { const b = []; while (true) b.push(new ArrayBuffer(1 << 20)) })()",
      "(() => { let s = 'ab'; const keep = []; while (true) { s = s + s.slice(0, 1 << 20) + Math.random(); keep.push(s) } })()",
    ]) {
      const r = await sb.runCode(code, { timeoutMs: 60_000 }); // generous: near the cap QuickJS allocates slowly, more so on a loaded host
      assert.ok(r.error, code);
      assert.ok(r.limitHit === "memoryMb" || /out of memory|string too long/.test(r.error.message), `${code}: ${r.error.message} ${r.limitHit}`);
    }
    assert.equal(await value("[1, 2, 3].length"), "3");
  });

  it("huge strings are refused or capped, never crash the worker", async () => {
    const r = await sb.runCode("'x'.repeat(2 ** 30).length");
    assert.ok(r.error);
    const v = await sb.runCode("'y'.repeat(5_000_000)");
    assert.equal(v.limitHit, "outputBytes");
    assert.ok(v.value!.length <= 1 << 20);
    assert.equal(await value("'ok'"), '"ok"');
  });

  it("deep recursion is a RangeError, also through getters, toString and JSON", async () => {
    for (const code of ["function f() { return f() }\nf()", "const o = { get x() { return this.x } }; o.x", "const t = { toString() { return '' + t } }; String(t)"]) {
      const r = await sb.runCode(code);
      assert.equal(r.error?.name, "RangeError", `${code}: ${r.error?.name} ${r.error?.message}`);
    }
    assert.equal(await value("2 * 3"), "6");
  });

  it("100,000-deep nested values (JSON, String(), eval, JSON.parse, the cell itself, the result) are guest errors; the sandbox lives on", async () => {
    // Recursive C paths inside QuickJS use the engine thread's native stack much faster than
    // QuickJS's own stack check counts; the engine thread's stack is sized so the check wins.
    await using own = await Sandbox.create({ language: "javascript" });
    const pid = own.pid;
    const build = "var d = []; for (let i = 0; i < 1e5; i++) d = [d];\n";
    const cases: [string, RegExp][] = [
      [`${build}JSON.stringify(d).length`, /^RangeError$/],
      ["String(d).length", /^RangeError$/],
      ["JSON.stringify({ v: d }, (k, v) => v).length", /^RangeError$/],
      ["eval('['.repeat(1e5) + ']'.repeat(1e5)).length", /^SyntaxError$/],
      ["JSON.parse('['.repeat(1e5) + ']'.repeat(1e5)).length", /^SyntaxError$/],
      ["(() => { let p = {}; for (let i = 0; i < 1e5; i++) p = new Proxy(p, {}); return p.x })()", /^RangeError$/],
      ["[".repeat(100_000) + "]".repeat(100_000), /^SyntaxError$/],
    ];
    for (const [code, name] of cases) {
      const r = await own.runCode(code);
      assert.match(r.error?.name ?? "(no error)", name, `${code.slice(0, 60)}: ${r.error?.message}`);
    }
    const shown = await own.runCode("d");
    assert.equal(shown.error, undefined);
    assert.equal(typeof shown.value, "string", "the result of a too-deep value is a placeholder string");
    assert.equal((await own.runCode("d = null; [d === null, [1, [2]].join()]")).value, "[true,\"1,2\"]");
    assert.equal(own.pid, pid, "the same worker served every case");
    assert.equal(own.closed, false);
    assert.equal(await value("'host and other sandboxes fine'"), '"host and other sandboxes fine"');
  });

  it("ReDoS-style regex is interrupted by the time limit", async () => {
    const r = await sb.runCode("/^(a+)+$/.test('a'.repeat(40) + 'b')", { timeoutMs: 500 });
    assert.equal(r.limitHit, "timeoutMs");
    assert.equal(await value("/^(a+)+$/.test('aaa')"), "true");
  });
});

describe("security (js): many sandboxes", () => {
  it("12 JavaScript sandboxes at once, isolated, then no worker process is left", async () => {
    await Sandbox.configurePool({ size: 0 });
    const n = 12;
    const boxes = await Promise.all(Array.from({ length: n }, (_, i) => Sandbox.create({ language: i % 2 ? "typescript" : "javascript", seed: i, limits: { timeoutMs: 60_000 } })));
    const pids = boxes.map((b) => b.pid);
    assert.equal(new Set(pids).size, n);
    const results = await Promise.all(boxes.map((b, i) => b.runCode(`import fs from 'fs';\nvar me = ${i};\nfs.writeFileSync('/tmp/who', String(me));\nme * 2`)));
    assert.deepEqual(results.map((r) => r.value), Array.from({ length: n }, (_, i) => String(i * 2)));
    const who = await Promise.all(boxes.map((b) => b.files.read("/tmp/who")));
    assert.deepEqual(who, Array.from({ length: n }, (_, i) => String(i)));
    await Promise.all(boxes.map((b) => b.kill()));
    await Promise.all(pids.map((p) => waitGone(p)));
    assert.equal(pids.filter(isAlive).length, 0);
  });
});
