// Options by tier, the resolver and the engine registry: an option a tier (or engine) cannot
// honour is an error naming the field; defaults come from the schemas; starting iterates the registry.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { InvalidOptionsError, SandboxClosedError, SnapshotRemovedError, TierUnavailableError } from "../../src/errors.js";
import { candidateEngines, ENGINES, HEAVY_BACKENDS, LANGUAGES, optionSchemas, startEngine } from "../../src/engines/registry.js";
import { LIMIT_NAMES } from "../../src/protocol/messages.js";
import { autoHeavyOptions, autoNanoOptions, HIT_LIMITS, parseTierOptions } from "../../src/policy/options.js";
import { resolveSandboxOptions, sandboxOptionsForTier, type SandboxOptionsInput } from "../../src/sandbox/resolve.js";

const parse = (input: unknown) => parseTierOptions(optionSchemas, input);
const issue = (input: unknown, field: string, message: RegExp) =>
  assert.throws(
    () => resolveSandboxOptions(input),
    (e: unknown) => e instanceof InvalidOptionsError && e.issues.some((i) => i.path === field && message.test(i.message)) && e.message.includes(field),
    JSON.stringify(input),
  );

describe("options by tier", () => {
  it("every option another tier uses is an error naming the field and its tier", () => {
    issue({ limits: { cpus: 2 } }, "limits.cpus", /not used by the nano tier; it applies to tier "heavy"/);
    issue({ tier: "nano", limits: { diskMb: 10 } }, "limits.diskMb", /not used by the nano tier; it applies to tier "heavy"/);
    issue({ tier: "heavy", limits: { vfsBytes: 10 } }, "limits.vfsBytes", /not used by the heavy tier; it applies to tier "nano"/);
    issue({ tier: "heavy", limits: { vfsFiles: 10 } }, "limits.vfsFiles", /not used by the heavy tier; it applies to tier "nano"/);
    issue({ backend: "gvisor" }, "backend", /not used by the nano tier/);
    issue({ packages: ["curl"] }, "packages", /not used by the nano tier/);
  });

  it("values a tier cannot honour are errors naming the field", () => {
    issue({ tier: "heavy", clock: "virtual" }, "clock", /real clock only/);
    issue({ tier: "heavy", language: "javascript" }, "language", /runs python/);
    issue({ tier: "heavy", mounts: [{ hostPath: os.tmpdir(), guestPath: "/home/user/d", readOnly: false }] }, "mounts.0.readOnly", /read-only/);
    issue({ tier: "heavy", mounts: [{ hostPath: os.tmpdir(), guestPath: "/data" }] }, "mounts.0.guestPath", /\/home\/user/);
    issue({ tier: "cloud" }, "tier", /"nano", "heavy", "auto"/);
    issue({ limits: { memMb: 5 } }, "limits.memMb", /unknown option/);
  });

  it("an option one engine of the tier does not serve names the field and who serves it", () => {
    // Both nano engines serve a network grant (Python's urllib / http.client, JavaScript's fetch).
    assert.doesNotThrow(() => resolveSandboxOptions({ language: "python", network: { allow: ["example.com"] } }));
    issue({ tier: "heavy", backend: "microvm", mounts: [{ hostPath: os.tmpdir(), guestPath: "/tmp/d" }] }, "mounts", /microVM .*applies to backend "gvisor"/);
  });

  it("fills each tier's defaults from its schema, and only its fields", () => {
    const nano = parse({});
    assert.equal(nano.tier, "nano");
    assert.equal(nano.language, "python");
    assert.deepEqual(Object.keys(nano.limits).sort(), ["graceMs", "memoryMb", "outputBytes", "timeoutMs", "vfsBytes", "vfsFiles"]);
    const heavy = parse({ tier: "heavy" });
    assert.equal(heavy.tier, "heavy");
    assert.deepEqual(Object.keys(heavy.limits).sort(), ["cpus", "diskMb", "graceMs", "memoryMb", "outputBytes", "timeoutMs"]);
    assert.equal(heavy.limits.memoryMb, nano.limits.memoryMb, "one default memory limit for both tiers");
    if (heavy.tier === "heavy") {
      assert.equal(heavy.backend, "auto");
      assert.equal(heavy.limits.cpus, 1);
    }
  });

  it('tier "auto": Python only, the real clock, mounts both tiers can honour; errors name the field', () => {
    issue({ tier: "auto", language: "javascript" }, "language", /tier "auto" runs python only.*use tier "nano"/);
    issue({ tier: "auto", clock: "virtual" }, "clock", /real clock only/);
    issue({ tier: "auto", network: { allow: ["not a host"] } }, "network.allow.0", /is not a DNS name or IP address/);
    issue({ tier: "auto", mounts: [{ hostPath: os.tmpdir(), guestPath: "/data" }] }, "mounts.0.guestPath", /\/home\/user/);
    issue({ tier: "auto", mounts: [{ hostPath: os.tmpdir(), guestPath: "/tmp/d", readOnly: false }] }, "mounts.0.readOnly", /read-only/);
    issue({ tier: "auto", limits: { cpus: 0 } }, "limits.cpus", /0\.01/);
    issue({ tier: "auto", limits: { vfsFiles: -1 } }, "limits.vfsFiles", /0/);
    issue({ tier: "auto", limits: { bogusMb: 1 } }, "limits.bogusMb", /unknown option/);
    issue({ tier: "auto", packages: ["Not A Package"] }, "packages.0", /Debian package name/);
    // The heavy side is checked when the options are resolved, not at the first move.
    issue({ tier: "auto", backend: "microvm", mounts: [{ hostPath: os.tmpdir(), guestPath: "/tmp/d" }] }, "mounts", /microVM .*applies to backend "gvisor"/);
  });

  it('tier "auto" takes every limit: the shared ones for both sides, the others for the side that has them', () => {
    const o = parse({ tier: "auto", limits: { memoryMb: 300, timeoutMs: 5000, vfsFiles: 7, cpus: 2, diskMb: 64 }, seed: 3 });
    assert.equal(o.tier, "auto");
    assert.deepEqual(Object.keys(o.limits).sort(), ["cpus", "diskMb", "graceMs", "memoryMb", "outputBytes", "timeoutMs", "vfsBytes", "vfsFiles"]);
    if (o.tier !== "auto") return;
    const nano = parse(autoNanoOptions(o));
    const heavy = parse(autoHeavyOptions(o));
    assert.equal(nano.tier, "nano");
    assert.equal(heavy.tier, "heavy");
    assert.deepEqual([nano.limits.memoryMb, nano.limits.timeoutMs, heavy.limits.memoryMb, heavy.limits.timeoutMs], [300, 5000, 300, 5000]);
    assert.equal((nano.limits as { vfsFiles: number }).vfsFiles, 7);
    assert.deepEqual([(heavy.limits as { cpus: number }).cpus, (heavy.limits as { diskMb: number }).diskMb], [2, 64]);
    assert.deepEqual([nano.seed, heavy.seed, nano.clock], [3, 3, "real"], "one seed; the real clock on both sides");
  });

  it("undefined values count as absent (a CLI passing cpus: undefined gave nothing)", () => {
    assert.doesNotThrow(() => parse({ limits: { cpus: undefined }, backend: undefined }));
  });

  it("the input type is a union discriminated by tier", () => {
    const ok: SandboxOptionsInput[] = [{}, { tier: "nano", limits: { vfsBytes: 1 } }, { tier: "heavy", limits: { cpus: 2 }, backend: "gvisor" }, { tier: "auto", limits: { cpus: 2, vfsFiles: 9 } }];
    // @ts-expect-error cpus is a heavy-tier limit
    const bad: SandboxOptionsInput = { tier: "nano", limits: { cpus: 2 } };
    // @ts-expect-error backend is a heavy-tier option
    const bad2: SandboxOptionsInput = { backend: "gvisor" };
    // @ts-expect-error tier "auto" has the real clock only
    const bad3: SandboxOptionsInput = { tier: "auto", clock: "virtual" };
    assert.equal(ok.length + [bad, bad2, bad3].length, 7);
  });

  it("limit names are one list: every limit a run can hit is a limits field", () => {
    assert.equal(LIMIT_NAMES, HIT_LIMITS);
  });
});

describe("the resolver", () => {
  it("draws a seed, picks the clock, records what was given", () => {
    const r = resolveSandboxOptions({ limits: { memoryMb: 128 } });
    assert.equal(r.clock, "real");
    assert.ok(Number.isInteger(r.seed));
    assert.deepEqual([...r.given.limits], ["memoryMb"]);
    assert.deepEqual([...r.given.fields], ["limits"]);
    assert.equal(r.options.seed, undefined, "a drawn seed is not a given one");
    const seeded = resolveSandboxOptions({ seed: 7 });
    assert.equal(seeded.seed, 7);
    assert.equal(seeded.clock, "virtual");
    assert.equal(resolveSandboxOptions({ tier: "heavy", seed: 7 }).clock, "real", "the heavy tier has no virtual clock");
    assert.equal(resolveSandboxOptions({ tier: "auto", seed: 7 }).clock, "real", 'tier "auto" keeps the clock it would have after a move');
  });

  it("normalises mounts and resolves their host paths to real directories", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-resolve-"));
    const link = `${dir}-link`;
    fs.symlinkSync(dir, link);
    try {
      const r = resolveSandboxOptions({ mounts: [{ hostPath: link, guestPath: "/data//x/" }] });
      assert.equal(r.mounts[0]?.hostPath, fs.realpathSync(dir));
      assert.equal(r.mounts[0]?.guestPath, "/data/x");
      issue({ mounts: [{ hostPath: path.join(dir, "missing"), guestPath: "/d" }] }, "mounts.0.hostPath", /not an existing directory/);
    } finally {
      fs.rmSync(link);
      fs.rmSync(dir, { recursive: true });
    }
  });

  it("names the engines that may serve it, from the registry", () => {
    assert.deepEqual(resolveSandboxOptions({}).engines, ["python-wasm"]);
    assert.deepEqual(resolveSandboxOptions({ language: "typescript" }).engines, ["quickjs-wasm"]);
    assert.deepEqual(resolveSandboxOptions({ tier: "heavy" }).engines, ["heavy-microvm", "heavy-gvisor"]);
    assert.deepEqual(resolveSandboxOptions({ tier: "heavy", backend: "gvisor" }).engines, ["heavy-gvisor"]);
    assert.deepEqual(resolveSandboxOptions({ tier: "heavy", mounts: [{ hostPath: os.tmpdir(), guestPath: "/tmp/d" }] }).engines, ["heavy-gvisor"], "auto skips the backend that refuses mounts");
    assert.deepEqual(resolveSandboxOptions({ tier: "auto" }).engines, ["auto"]);
  });

  it("carries options over to another tier without the fields it has no use for", () => {
    const heavy = resolveSandboxOptions({ tier: "heavy", packages: ["curl"], limits: { cpus: 2, memoryMb: 300 } }).options;
    const nano = resolveSandboxOptions({ ...sandboxOptionsForTier(heavy, "nano"), language: "javascript" }).options;
    assert.equal(nano.tier, "nano");
    assert.equal(nano.limits.memoryMb, 300);
  });
});

describe("the engine registry", () => {
  it("each engine says its tier and languages; the name lists derive from it", () => {
    const table = ENGINES.map((e) => `${e.id} ${e.tier} ${e.languages.join("+")}${e.tier === "heavy" ? ` ${e.backend}` : ""}`);
    assert.deepEqual(table, ["python-wasm nano python", "quickjs-wasm nano javascript+typescript", "heavy-microvm heavy python microvm", "heavy-gvisor heavy python gvisor", "auto auto python"]);
    assert.deepEqual(LANGUAGES, ["python", "javascript", "typescript"]);
    assert.deepEqual(HEAVY_BACKENDS, ["microvm", "gvisor"]);
  });

  it("a combination no engine serves is an error listing what exists", async () => {
    const options = { ...parse({}), language: "cobol" } as never;
    assert.throws(() => candidateEngines({ options, seed: 1, clock: "real", mounts: [] }), (e: unknown) => e instanceof TierUnavailableError && /nano: python; nano: javascript, typescript; heavy\/microvm: python; heavy\/gvisor: python/.test(e.message));
    await assert.rejects(startEngine([], { options, seed: 1, clock: "real", mounts: [] }), (e: unknown) => e instanceof TierUnavailableError && /engines: nano: python/.test(e.message));
  });

  it("a removed snapshot is a closed sandbox to every surface, with its own class", () => {
    const e = new SnapshotRemovedError();
    assert.ok(e instanceof SandboxClosedError);
    assert.equal(e.code, "SANDBOX_CLOSED");
    assert.match(e.message, /snapshot was removed/);
  });
});
