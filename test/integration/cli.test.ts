import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const BIN = fileURLToPath(new URL("../../bin/agentbox.js", import.meta.url));
const EXAMPLE = fileURLToPath(new URL("../../examples/analyze.py", import.meta.url));
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000 });

describe("agentbox CLI", () => {
  it("runs -c code: exit 0, output on stdout", () => {
    const r = cli("run", "-c", "import sys; print(sys.version_info[0])");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "3\n");
  });

  it("runs the example file with limits and a seed, reproducibly", () => {
    const a = cli("run", EXAMPLE, "--memory", "128", "--timeout", "5s", "--seed", "7");
    const b = cli("run", EXAMPLE, "--memory", "128", "--timeout", "5s", "--seed", "7");
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, /"visits_mean"/);
    assert.equal(a.stdout, b.stdout);
  });

  it("exit 1 with the traceback on stderr when the code raises", () => {
    const r = cli("run", "-c", "raise ValueError('nope')");
    assert.equal(r.status, 1);
    assert.match(r.stderr, /ValueError: nope/);
  });

  it("exit 2 when a limit is hit", () => {
    assert.equal(cli("run", "-c", "while True: pass", "--timeout", "300ms").status, 2);
    assert.equal(cli("run", "-c", "x = bytearray(500 * 2**20)", "--memory", "64").status, 2);
  });

  it("exit 64 on bad usage", () => {
    assert.equal(cli("run").status, 64);
    assert.equal(cli("run", "/no/such/file.py").status, 64);
    assert.equal(cli("run", "-c", "1", "--mount", "nonsense").status, 64);
  });

  it("--json gives the whole result as one object", () => {
    const r = cli("run", "-c", "print('hi')\n6 * 7", "--json", "--seed", "3");
    const j = JSON.parse(r.stdout);
    assert.equal(j.stdout, "hi\n");
    assert.equal(j.value, "42");
    assert.equal(j.seed, 3);
    assert.match(j.vfsDigest, /^[0-9a-f]{64}$/);
  });

  it("--mount makes a host directory readable", () => {
    const dir = fileURLToPath(new URL("../../examples", import.meta.url));
    const r = cli("run", "-c", "print(open('/mnt/ex/analyze.py').read()[:1])", "--mount", `${dir}:/mnt/ex`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "#\n");
  });
});
