import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidOptionsError } from "../../src/errors.js";
import { optionSchemas } from "../../src/engines/registry.js";
import { GUEST_PATH_RULE, normalizeGuestPath, parseOptions, parseTierOptions, runOptionsSchema } from "../../src/policy/options.js";

const parse = (input: unknown) => parseTierOptions(optionSchemas, input);

describe("sandbox options", () => {
  it("fills defaults", () => {
    const o = parse({});
    assert.equal(o.tier, "nano");
    assert.equal(o.language, "python");
    assert.equal(o.limits.memoryMb, 256);
    assert.equal(o.limits.timeoutMs, 30_000);
    assert.equal(o.limits.outputBytes, 1024 * 1024);
    assert.deepEqual(o.mounts, []);
    assert.equal(o.seed, undefined);
  });

  it("keeps given limits and fills the rest", () => {
    const o = parse({ limits: { memoryMb: 128 } });
    assert.equal(o.limits.memoryMb, 128);
    assert.equal(o.limits.timeoutMs, 30_000);
  });

  it("names the bad field", () => {
    assert.throws(
      () => parse({ limits: { memoryMb: -1 } }),
      (e: unknown) => e instanceof InvalidOptionsError && e.issues[0]?.path === "limits.memoryMb" && /limits\.memoryMb/.test(e.message),
    );
  });

  it("rejects unknown keys, at the top and inside limits", () => {
    assert.throws(() => parse({ langauge: "python" }), /langauge/);
    assert.throws(() => parse({ limits: { memMb: 5 } }), /memMb/);
  });

  it("rejects a language it does not run, a negative seed, a fractional timeout", () => {
    assert.throws(() => parse({ language: "cobol" }), /language/);
    assert.throws(() => parse({ seed: -3 }), /seed/);
    assert.throws(() => parse({ limits: { timeoutMs: 1.5 } }), /limits\.timeoutMs/);
  });

  it("validates mounts: absolute host path, read-only by default", () => {
    const o = parse({ mounts: [{ hostPath: "/srv/data", guestPath: "/data" }] });
    assert.equal(o.mounts[0]?.readOnly, true);
    assert.throws(() => parse({ mounts: [{ hostPath: "rel", guestPath: "/data" }] }), /mounts\.0\.hostPath/);
  });

  it("validates env names", () => {
    assert.throws(() => parse({ env: { "BAD NAME": "x" } }), /env/);
  });

  it("run options: timeout must be positive, callbacks must be functions", () => {
    assert.throws(() => parseOptions(runOptionsSchema, { timeoutMs: 0 }), /timeoutMs/);
    assert.throws(() => parseOptions(runOptionsSchema, { onStdout: "x" }), /onStdout/);
    assert.doesNotThrow(() => parseOptions(runOptionsSchema, { signal: new AbortController().signal, onStdout: () => undefined }));
  });
});

describe("guest paths", () => {
  it("normalises . and repeated or trailing slashes", () => {
    assert.equal(normalizeGuestPath("/data/./a//b.txt"), "/data/a/b.txt");
    assert.equal(normalizeGuestPath("/data/"), "/data");
    assert.equal(normalizeGuestPath("/"), "/");
    assert.equal(normalizeGuestPath("/a..b/..c/d.."), "/a..b/..c/d..", "only a whole .. segment is refused");
  });

  it("refuses relative paths, .. segments and NUL bytes, naming the path and the rule", () => {
    for (const p of ["data/x", "/data/../b.txt", "/../../etc/passwd", "/data/..", "..", "/data/\0x"]) {
      assert.throws(
        () => normalizeGuestPath(p),
        (e: unknown) => e instanceof InvalidOptionsError && e.message.includes(JSON.stringify(p)) && e.message.includes(GUEST_PATH_RULE) && e.issues[0]?.path === "path",
        p,
      );
    }
    assert.throws(() => normalizeGuestPath(""), InvalidOptionsError);
  });
});
