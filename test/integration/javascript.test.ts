// The JavaScript / TypeScript nano tier (QuickJS in Wasm in a worker process), beyond the shared
// conformance suite (test/conformance/: REPL, output, guest errors, files, limits, determinism,
// kill run on every engine): JS semantics, modules, TypeScript, the fs module over the VFS,
// quotas, deep recursion, pooling and the CLI.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FileSystemError, FileSystemQuotaError, Sandbox } from "../../src/index.js";
import { agentboxEnv, isAlive, waitGone } from "../helpers.js";

describe("javascript: REPL semantics", () => {
  it("keeps declarations across runs, returns the last expression as JSON, streams console output", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    const chunks: string[] = [];
    const r = await sb.runCode("const x = 41;\nlet list = [1, 2];\nconsole.log('hi', { a: 1 });\nconsole.error('oops');\nx + 1", { onStdout: (c) => chunks.push(c) });
    assert.equal(r.value, "42");
    assert.equal(r.stdout, 'hi {"a":1}\n');
    assert.equal(r.stderr, "oops\n");
    assert.equal(chunks.join(""), r.stdout);
    assert.equal(r.exitCode, 0);
    assert.match(r.vfsDigest, /^[0-9a-f]{64}$/);
    assert.equal((await sb.runCode("list.concat(x)")).value, "[1,2,41]");
    assert.equal((await sb.runCode("function f(n) { return n * 2 }\nclass P { constructor(v) { this.v = v } }")).value, undefined);
    assert.equal((await sb.runCode("new P(f(x)).v")).value, "82");
    assert.equal((await sb.runCode("const x = 'again'; x")).value, '"again"', "a later cell may declare the same name");
    assert.equal((await sb.runCode("'a'.repeat(3)")).value, '"aaa"');
    assert.equal((await sb.runCode("undefined")).value, undefined);
    assert.equal((await sb.runCode("10n ** 20n")).value, "100000000000000000000n");
    assert.equal((await sb.runCode("const o = {}; o.self = o; o")).value, "[object Object]", "not JSON: the string form");
  });

  it("supports top-level await, promises as the last value, and timers", async () => {
    await using sb = await Sandbox.create({ language: "javascript", seed: 3 });
    assert.equal((await sb.runCode("const v = await Promise.resolve(7);\nv * 6")).value, "42");
    assert.equal((await sb.runCode("async function main() { return v + 1 }\nmain()")).value, "8");
    const t = await sb.runCode("const order = [];\nsetTimeout(() => order.push('b'), 20);\nsetTimeout(() => order.push('a'), 10);\nawait new Promise((r) => setTimeout(r, 30));\norder");
    assert.equal(t.value, '["a","b"]');
    const never = await sb.runCode("await new Promise(() => {})");
    assert.match(never.error!.message, /never settled/);
  });

  it("returns guest errors with name, message and a stack in the user's code", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    const r = await sb.runCode("function g() {\n  throw new TypeError('bad value');\n}\ng()");
    assert.equal(r.exitCode, 1);
    assert.equal(r.error?.name, "TypeError");
    assert.equal(r.error?.message, "bad value");
    assert.match(r.error!.traceback, /at g \(cell-1\.js:2:/);
    const s = await sb.runCode("let y = ;");
    assert.equal(s.error?.name, "SyntaxError");
    assert.match(s.error!.message, /line 1, column 9/);
    assert.equal((await sb.runCode("throw 42")).error?.message, "Uncaught 42");
    assert.equal((await sb.runCode("1 + 1")).value, "2", "the sandbox lives on after guest errors");
  });
});

describe("javascript: modules and declarations", () => {
  it("loads every built-in module dynamically too: the same instances, with or without node:", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    await sb.files.write("/tmp/in.txt", "dyn");
    const r = await sb.runCode(
      "import fs from 'fs';\nimport * as ns from 'fs';\nconst a = await import('fs');\nconst b = await import('node:fs');\n" +
        "const p = await import('node:fs/promises');\n" +
        "[a === b, a === ns, a.default === fs, a.readFileSync === fs.readFileSync, p.default === fs.promises, await p.readFile('/tmp/in.txt', 'utf8')]",
    );
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(r.value, '[true,true,true,true,true,"dyn"]');
    const later = await sb.runCode("async function load() { return (await import('fs')).readFileSync('/tmp/in.txt', 'utf8') }\nawait load()");
    assert.equal(later.value, '"dyn"', "import() inside a function of a later cell");
    const host = await sb.runCode("await import('node:child_process')");
    assert.match(host.error!.message, /Cannot find module 'child_process'.*no host modules/);
  });

  it("keeps the temporal dead zone of top-level let, const and class within a cell", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    const r = await sb.runCode("function g() { return x }\ng()\nlet x = 1");
    assert.equal(r.error?.name, "ReferenceError");
    assert.match(r.error!.message, /Cannot access 'x' before initialization/);
    assert.match(r.error!.traceback, /at g \(cell-1\.js:1:/);
    for (const code of ["y = 1; const y = 2", "typeof z; let z", "new K(); class K {}", "let [a, { b }] = [a, {}]"]) {
      assert.equal((await sb.runCode(code)).error?.name, "ReferenceError", code);
    }
    // Redeclaration across cells still works, and a later declaration ends the dead zone.
    assert.equal((await sb.runCode("let x = 2;\ng()")).value, "2");
    assert.equal((await sb.runCode("const x = 3;\nx + g()")).value, "6");
    assert.equal((await sb.runCode("let { p, q: [r] } = { p: 1, q: [2] }, s;\n[p, r, s]")).value, "[1,2,null]");
    assert.equal((await sb.runCode("1;\nlet t = 2")).value, "1", "a declaration adds no value of its own");
    assert.equal((await sb.runCode("'use strict';\nlet u = 4;\nu")).value, "4");
  });
});

describe("typescript", () => {
  it("type-strips and runs, with REPL state", async () => {
    await using sb = await Sandbox.create({ language: "typescript" });
    const r = await sb.runCode("interface P { x: number }\nconst p: P = { x: 2 };\nenum E { A = 40 }\nfunction add<T extends number>(a: T, b: number): number { return a + b }\nadd(p.x, E.A)");
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(r.value, "42");
    assert.equal((await sb.runCode("(p as P).x satisfies number")).value, "2");
  });

  it("reports syntax errors at the line and column of the user's source", async () => {
    await using sb = await Sandbox.create({ language: "typescript" });
    const r = await sb.runCode("const a: number = 1;\nconst b: = 2;");
    assert.equal(r.error?.name, "SyntaxError");
    assert.match(r.error!.message, /line 2, column 10/);
    const rt = await sb.runCode("const c: string = 'x';\n\nfunction h(): void {\n  null!.boom;\n}\nh()");
    assert.equal(rt.error?.name, "TypeError");
    assert.match(rt.error!.traceback, /cell-\d+\.ts:4:/, "runtime errors keep the user's line numbers");
  });
});

describe("javascript: files", () => {
  it("shares one VFS between sb.files and the guest's fs module", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    await sb.files.write("/data/in.csv", "a,b\n1,2\n");
    const r = await sb.runCode(
      "import fs from 'fs';\nimport { readdirSync } from 'node:fs';\nconst rows = fs.readFileSync('/data/in.csv', 'utf8').trim().split('\\n');\nfs.mkdirSync('/out/deep', { recursive: true });\nfs.writeFileSync('/out/deep/r.json', JSON.stringify({ n: rows.length }));\nfs.appendFileSync('/out/log.txt', 'one');\nfs.appendFileSync('/out/log.txt', new TextEncoder().encode('two'));\n[readdirSync('/out'), fs.existsSync('/nope'), fs.statSync('/out/log.txt').size]",
    );
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(r.value, '[["deep","log.txt"],false,6]');
    assert.equal(await sb.files.read("/out/deep/r.json"), '{"n":2}');
    assert.equal(await sb.files.read("/out/log.txt"), "onetwo");
    assert.deepEqual((await sb.files.list("/out")).map((e) => [e.name, e.type, e.size]), [["deep", "dir", 0], ["log.txt", "file", 6]]);
    await sb.files.write("/data/bin", new Uint8Array([0, 1, 255]));
    assert.equal((await sb.runCode("Array.from(fs.readFileSync('/data/bin'))")).value, "[0,1,255]");
    const e = await sb.runCode("try { fs.readFileSync('/missing') } catch (e) { [e.code, e.message] }");
    assert.equal(e.value, `["ENOENT","ENOENT: no such file or directory, '/missing'"]`);
    await sb.runCode("fs.rmSync('/out', { recursive: true })");
    assert.equal(await sb.files.exists("/out/log.txt"), false);
    await assert.rejects(sb.files.read("/out/log.txt"), (x: unknown) => x instanceof FileSystemError && x.errno === "ENOENT");
  });

  it("lists in code-point order and enforces the quotas for host and guest writes", async () => {
    await using sb = await Sandbox.create({ language: "javascript", limits: { vfsBytes: 100_000, vfsFiles: 50 } });
    await sb.runCode("import fs from 'fs';\nfor (const n of ['b', 'B', 'a', '_', 'é', '1']) fs.writeFileSync('/tmp/' + n, n)");
    assert.deepEqual((await sb.files.list("/tmp")).map((e) => e.name), ["1", "B", "_", "a", "b", "é"]);
    assert.equal((await sb.runCode("fs.readdirSync('/tmp').join('')")).value, '"1B_abé"');
    await sb.files.write("/data/ok.bin", new Uint8Array(60_000));
    await assert.rejects(sb.files.write("/data/big.bin", new Uint8Array(60_000)), (x: unknown) => x instanceof FileSystemQuotaError && x.limit === "vfsBytes");
    const g = await sb.runCode("fs.writeFileSync('/tmp/g.bin', 'x'.repeat(50_000))");
    assert.equal(g.error?.message.startsWith("ENOSPC"), true, g.error?.message);
    assert.equal(g.limitHit, "vfsBytes");
    await sb.files.remove("/data/ok.bin");
    assert.equal((await sb.runCode("fs.writeFileSync('/tmp/g.bin', 'x'.repeat(50_000))")).error, undefined, "removing files gives the bytes back");
    const many = await sb.runCode("for (let i = 0; i < 100; i++) fs.writeFileSync('/tmp/f' + i, '')");
    assert.equal(many.limitHit, "vfsFiles");
    assert.match(many.error!.message, /^EDQUOT/);
  });
});

describe("javascript: limits", () => {
  it("stack: deep recursion is a guest RangeError", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    const r = await sb.runCode("function f(n) { return f(n + 1) + 1 }\nf(0)");
    assert.equal(r.error?.name, "RangeError");
    assert.match(r.error!.message, /call stack/);
    assert.ok(r.error!.traceback.split("\n").length < 50);
    assert.equal((await sb.runCode("'still here'")).value, '"still here"');
  });

});

const DETERMINISM_PROGRAM = `
import fs from "fs";
const a = new Uint32Array(4);
crypto.getRandomValues(a);
console.log(Math.random(), Math.random(), Array.from(a).join(","), crypto.randomUUID());
console.log(Date.now(), new Date().toISOString());
fs.writeFileSync("/tmp/out.txt", String(Math.random()));
await new Promise((r) => setTimeout(r, 1000));
console.log(Date.now());
`;

describe("javascript: determinism", () => {
  it("same seed → byte-identical result in fresh host processes", () => {
    const bin = fileURLToPath(new URL("../../bin/agentbox.js", import.meta.url));
    const run = () => spawnSync(process.execPath, [bin, "run", "--language", "javascript", "-c", DETERMINISM_PROGRAM, "--seed", "99", "--json"], { encoding: "utf8", env: agentboxEnv() });
    const a = run();
    const b = run();
    assert.equal(a.status, 0, a.stderr + a.stdout);
    const ja = JSON.parse(a.stdout) as { stdout: string; vfsDigest: string };
    const jb = JSON.parse(b.stdout) as { stdout: string; vfsDigest: string };
    assert.equal(ja.stdout, jb.stdout);
    assert.equal(ja.vfsDigest, jb.vfsDigest);
  });

  it("without a seed the clock is real and the randomness differs", async () => {
    await using a = await Sandbox.create({ language: "javascript" });
    await using b = await Sandbox.create({ language: "javascript" });
    assert.notEqual((await a.runCode("Math.random()")).value, (await b.runCode("Math.random()")).value);
    assert.equal((await a.runCode("new Date().getUTCFullYear()")).value, String(new Date().getUTCFullYear()));
  });
});

describe("javascript: lifecycle", () => {
  it("pooled sandboxes each get a fresh worker, and kill ends it", async () => {
    await Sandbox.configurePool({ size: 2, wait: true });
    const pids: (number | undefined)[] = [];
    for (let i = 0; i < 3; i++) {
      const sb = await Sandbox.create({ language: i % 2 ? "typescript" : "javascript" });
      assert.equal((await sb.runCode("typeof leak")).value, '"undefined"');
      await sb.runCode("var leak = 1");
      pids.push(sb.pid);
      await sb.kill();
      await sb.kill();
      assert.equal(sb.closed, true);
    }
    assert.equal(new Set(pids).size, 3);
    for (const p of pids) await waitGone(p);
    assert.equal(pids.filter(isAlive).length, 0);
    await Sandbox.configurePool({ size: 0 });
  });

});

describe("javascript: CLI", () => {
  const bin = fileURLToPath(new URL("../../bin/agentbox.js", import.meta.url));
  const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 60_000, env: agentboxEnv() });

  it("runs a .ts file (language from the extension) reproducibly", () => {
    const example = fileURLToPath(new URL("../../examples/analyze.ts", import.meta.url));
    const a = cli("run", example, "--seed", "7");
    const b = cli("run", example, "--seed", "7");
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, /"visits_mean"/);
    assert.equal(a.stdout, b.stdout);
  });

  it("-c with --language; exit codes for guest errors, limits and bad usage", () => {
    const ok = cli("run", "--language", "javascript", "-c", "console.log(typeof process); 6 * 7");
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(ok.stdout, "undefined\n42\n");
    const raised = cli("run", "--language", "typescript", "-c", "const n: number = 1;\nthrow new RangeError('nope')");
    assert.equal(raised.status, 1);
    assert.match(raised.stderr, /RangeError: nope/);
    assert.equal(cli("run", "--language", "javascript", "-c", "for (;;) {}", "--timeout", "300ms").status, 2);
    assert.equal(cli("run", "--language", "cobol", "-c", "1").status, 64);
  });
});
