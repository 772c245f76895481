import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parse } from "acorn";
import { pickLanguage } from "../../src/cli/main.js";
import { MemTree, VfsError } from "../../src/vfs/tree.js";
import { CellSyntaxError, rewriteCell } from "../../src/worker/js-cell.js";

describe("JavaScript cell rewriting", () => {
  it("turns top-level let/const/class into rebindable globals with a dead zone, on the same lines", () => {
    assert.equal(
      rewriteCell("const a = 1;\nlet b, [c] = d;\nif (a) { const e = 3 }", parse),
      '__agentbox_lexical.enter(["a","b","c"]); var {} = ( a = __agentbox_lexical.init(["a"], 1), 0);\n' +
        'var {} = ( b = __agentbox_lexical.init(["b"], void 0), [c] = __agentbox_lexical.init(["c"], d), 0);\nif (a) { const e = 3 }',
    );
    assert.equal(rewriteCell('"use strict";\nclass C {}\nC', parse), '"use strict";\n__agentbox_lexical.enter(["C"]); var {} = (C = __agentbox_lexical.init(["C"], class C {}), 0);\nC');
    assert.equal(rewriteCell("var v = 1; function f() {}", parse), "var v = 1; function f() {}", "var and function are left as they are");
  });

  it("binds imports of the built-in modules through dynamic import, keeping the line count", () => {
    const out = rewriteCell('import fs, { readFileSync as r } from "fs";\nimport * as p from\n  "node:fs/promises";\nimport "fs"\nx', parse);
    assert.equal(out.split("\n").length, 5);
    assert.match(out, /^var fs = \(await import\("fs"\)\)\.default, r = \(await import\("fs"\)\)\["readFileSync"\];/);
    assert.match(out, /var p = \(await import\("node:fs\/promises"\)\);\n\nawait import\("fs"\);\nx$/);
  });

  it("reports syntax errors with a 1-based line and column", () => {
    assert.throws(() => rewriteCell("ok()\nlet = = 2", parse), (e: unknown) => e instanceof CellSyntaxError && e.line === 2 && e.column === 7);
  });
});

describe("in-memory VFS tree", () => {
  it("creates, lists sorted, digests by content, and charges quotas", () => {
    const t = new MemTree({ vfsBytes: 10, vfsFiles: 3 }, ["/tmp"]);
    t.writeFile("/tmp/b", new TextEncoder().encode("12345"));
    t.mkdir("/tmp/A");
    assert.deepEqual(t.readdir("/tmp"), ["A", "b"]);
    const d1 = t.digest();
    assert.throws(() => t.writeFile("/tmp/c", new Uint8Array(6)), (e: unknown) => e instanceof VfsError && e.code === "ENOSPC" && e.limit === "vfsBytes");
    assert.equal(t.takeLimitHit(), "vfsBytes");
    t.writeFile("/tmp/c", new Uint8Array(5));
    assert.throws(() => t.mkdir("/tmp/D"), (e: unknown) => e instanceof VfsError && e.code === "EDQUOT");
    t.remove("/tmp/c");
    assert.equal(t.digest(), d1);
    assert.deepEqual(t.getUsage(), { bytes: 5, files: 2 });
    t.rename("/tmp/b", "/tmp/A/b");
    assert.deepEqual(t.list("/tmp/A"), [{ name: "b", path: "/tmp/A/b", type: "file", size: 5 }]);
    assert.throws(() => t.remove("/tmp"), (e: unknown) => e instanceof VfsError && e.code === "ENOTEMPTY");
    assert.throws(() => t.readFile("/tmp/../../nope"), (e: unknown) => e instanceof VfsError && e.code === "ENOENT");
  });
});

describe("cli language choice", () => {
  it("takes --language, else the file extension, else python", () => {
    assert.equal(pickLanguage(undefined, "a.ts"), "typescript");
    assert.equal(pickLanguage(undefined, "a.mjs"), "javascript");
    assert.equal(pickLanguage(undefined, "a.py"), "python");
    assert.equal(pickLanguage(undefined, undefined), "python");
    assert.equal(pickLanguage("javascript", "a.py"), "javascript");
    assert.throws(() => pickLanguage("cobol", undefined), /--language/);
  });
});
