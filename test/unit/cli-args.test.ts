import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { flagHelp, flagOptions, readFlags } from "../../src/cli/flags.js";
import { EXIT, main, parseDuration, parseMount } from "../../src/cli/main.js";
import { resolveSandboxOptions } from "../../src/index.js";

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

  it("maps flags to sandbox options through one table, naming the flag on a bad value", () => {
    const argv = ["--memory", "128", "--timeout", "2s", "--cpus", "0.5", "--env", "A=1", "--env", "B=2", "--mount", "/srv:/data", "--seed", "7", "--packages", "jq, git"];
    const names = ["memory", "timeout", "cpus", "env", "mount", "seed", "packages"] as const;
    assert.deepEqual(flagOptions(readFlags(argv, names), names), {
      limits: { memoryMb: 128, timeoutMs: 2000, cpus: 0.5 },
      env: { A: "1", B: "2" },
      mounts: [{ hostPath: "/srv", guestPath: "/data", readOnly: true }],
      seed: 7,
      packages: ["jq", "git"],
    });
    assert.throws(() => flagOptions(readFlags(["--cpus", "-1"], ["cpus"]), ["cpus"]), /--cpus/);
    assert.throws(() => flagOptions(readFlags(["--backend", "kvm"], ["backend"]), ["backend"]), /--backend: expected one of auto, gvisor, microvm/);
    assert.throws(() => readFlags(["--disk", "1"], ["memory"]), /--disk/);
  });

  it("help shows the defaults of the library's option schema", () => {
    const nano = resolveSandboxOptions({}).options.limits;
    const heavy = resolveSandboxOptions({ tier: "heavy" }).options.limits as { diskMb: number; cpus: number };
    assert.match(flagHelp(["memory"]), new RegExp(`--memory MB .*\\(default ${nano.memoryMb}\\)`));
    assert.match(flagHelp(["timeout"]), new RegExp(`\\(default ${nano.timeoutMs / 1000}s\\)`));
    assert.match(flagHelp(["disk", "cpus"]), new RegExp(`default ${heavy.diskMb}\\)[^]*default ${heavy.cpus}\\)`));
  });

  it("exec and mcp refuse bad values with 64 naming the flag, before starting anything", async () => {
    for (const [argv, flag] of [
      [["exec", "--memory", "lots", "--", "true"], "--memory"],
      [["exec", "--cpus", "0", "--", "true"], "--cpus"],
      [["exec", "--backend", "kvm", "--", "true"], "--backend"],
      [["mcp", "--timeout", "soon"], "--timeout"],
      [["run", "-c", "1", "--memory", "1"], "--memory"],
    ] as const) {
      const { out, io } = capture();
      assert.equal(await main([...argv], io), EXIT.usage, argv.join(" "));
      assert.ok(out.stderr.includes(flag), `${argv.join(" ")}: ${out.stderr.split("\n")[0]}`);
    }
  });
});
