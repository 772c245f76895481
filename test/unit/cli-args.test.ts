import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { EXIT, main, parseDuration, parseMount } from "../../src/cli/main.js";

function capture() {
  const out = { stdout: "", stderr: "" };
  return { out, io: { stdout: (s: string) => void (out.stdout += s), stderr: (s: string) => void (out.stderr += s) } };
}

describe("cli argument parsing", () => {
  it("reads durations", () => {
    assert.equal(parseDuration("5s"), 5000);
    assert.equal(parseDuration("250ms"), 250);
    assert.equal(parseDuration("2m"), 120_000);
    assert.equal(parseDuration("1500"), 1500);
    assert.throws(() => parseDuration("soon"), /--timeout/);
  });

  it("reads mounts", () => {
    assert.deepEqual(parseMount("/srv:/data"), { hostPath: "/srv", guestPath: "/data", readOnly: true });
    assert.deepEqual(parseMount("/srv:/data:rw"), { hostPath: "/srv", guestPath: "/data", readOnly: false });
    assert.throws(() => parseMount("/srv"), /--mount/);
    assert.throws(() => parseMount("/srv:/data:xx"), /--mount/);
  });

  it("exits 64 on bad usage, before starting anything", async () => {
    for (const argv of [[], ["run"], ["walk", "x.py"], ["run", "-c", "1", "x.py"], ["run", "--bogus"], ["run", "-c", "1", "--memory", "lots"], ["run", "-c", "1", "--memory", "1"]]) {
      const { out, io } = capture();
      assert.equal(await main(argv, io), EXIT.usage, argv.join(" "));
      assert.match(out.stderr, /agentbox:/);
    }
  });

  it("exits 64 with a JSON error under --json", async () => {
    const { out, io } = capture();
    assert.equal(await main(["run", "-c", "1", "--timeout", "x", "--json"], io), EXIT.usage);
    assert.equal(JSON.parse(out.stdout).exitCode, 64);
  });
});
