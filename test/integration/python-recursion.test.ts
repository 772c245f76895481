// Deep recursion in the nano tier's Python, in Python code and through C code (repr, json,
// pickle): a RecursionError in the result, never a crashed worker; the sandbox and its globals
// live on. Cold workers (pool: false) matter: V8's baseline-tier frames are the largest.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";

const NEST = "def nest(n):\n    l = []\n    for _ in range(n):\n        l = [l]\n    return l\ndeep = nest(100_000)";

const CASES: [name: string, code: string][] = [
  ["plain Python recursion", "def f(n):\n    return f(n + 1)\nf(0)"],
  ["a __repr__ that returns repr(self)", "class A:\n    def __repr__(self):\n        return repr(self)\nrepr(A())"],
  ["a __repr__ that includes the repr of a deep structure", "class B:\n    def __repr__(self):\n        return 'B(%r)' % (deep,)\nrepr([B()])"],
  ["json.dumps of a list nested 100,000 deep", "import json\njson.dumps(deep)"],
  ["pickle.dumps of a list nested 100,000 deep", "import pickle\npickle.dumps(deep)"],
  ["copy.deepcopy of a list nested 100,000 deep", "import copy\ncopy.deepcopy(deep)"],
  ["str.format through a recursive __format__", "class F:\n    def __format__(self, spec):\n        return format(self, spec)\nformat(F(), '')"],
  ["a recursive __eq__", "class E:\n    def __eq__(self, other):\n        return [self] == [other]\nE() == E()"],
];

const RAISED_LIMIT: [name: string, code: string][] = [
  ["repr of a deeply nested list", "repr(deep)"],
  ["a __repr__ that returns repr(self)", "class A:\n    def __repr__(self):\n        return repr(self)\nrepr(A())"],
  ["plain Python recursion", "def g(n):\n    return g(n + 1)\ng(0)"],
];

async function assertRecursionError(sb: Sandbox, code: string): Promise<void> {
  const r = await sb.runCode(code);
  assert.ok(r.error, `no error; value ${r.value?.slice(0, 80)}`);
  assert.ok(r.error.name === "RecursionError" || r.error.name === "MemoryError", `${r.error.name}: ${r.error.message}`);
  // Python frames live in Wasm memory: a raised recursion limit can run into the memory limit first.
  assert.equal(r.limitHit, r.error.name === "MemoryError" ? "memoryMb" : undefined);
}

async function assertLivesOn(sb: Sandbox): Promise<void> {
  assert.equal(sb.closed, false);
  assert.equal((await sb.runCode("kept")).value, "'still here'");
  assert.equal((await sb.runCode("sum(range(10))")).value, "45");
}

describe("python recursion: a RecursionError, and the sandbox lives on", () => {
  for (const pool of [false, true]) {
    describe(pool ? "pooled (warmed) worker" : "cold worker", () => {
      for (const [name, code] of CASES) {
        it(name, { timeout: 120_000 }, async () => {
          await using sb = await Sandbox.create({ language: "python", seed: 1, pool, limits: { timeoutMs: 60_000 } });
          assert.equal((await sb.runCode(`kept = 'still here'\n${NEST}`)).error, undefined);
          await assertRecursionError(sb, code);
          await assertLivesOn(sb);
        });
      }
    });
  }

  describe("after the guest raised sys.setrecursionlimit(10**6)", () => {
    for (const [name, code] of RAISED_LIMIT) {
      it(name, { timeout: 120_000 }, async () => {
        await using sb = await Sandbox.create({ language: "python", seed: 1, pool: false, limits: { timeoutMs: 60_000, memoryMb: 96 } });
        assert.equal((await sb.runCode(`import sys\nsys.setrecursionlimit(10**6)\nkept = 'still here'\n${NEST}`)).error, undefined);
        await assertRecursionError(sb, code);
        await assertLivesOn(sb);
      });
    }
  });

  it("many overflows in a row leave the interpreter sound", { timeout: 120_000 }, async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 1, limits: { timeoutMs: 60_000 } });
    assert.equal((await sb.runCode(`kept = 'still here'\n${NEST}\nimport json`)).error, undefined);
    for (let i = 0; i < 5; i++) await assertRecursionError(sb, "json.dumps(deep)");
    await assertLivesOn(sb);
    assert.equal((await sb.runCode("json.dumps(nest(500))[:3]")).value, "'[[['");
  });
});
