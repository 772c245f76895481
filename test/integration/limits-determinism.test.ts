// Python on the nano tier: the limits and determinism cases beyond the shared conformance suite
// (test/conformance/ checks memory, output and same-seed runs on every engine): a slow memory
// bomb, fresh host processes, the virtual clock, drawn seeds.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox } from "../../src/index.js";
import { agentboxEnv } from "../helpers.js";

const DETERMINISM_PROGRAM = `
import random, os, uuid, secrets, time, datetime, hashlib
print(random.random(), random.randint(0, 10**9))
print(os.urandom(8).hex(), uuid.uuid4(), secrets.token_hex(8))
print(time.time(), datetime.datetime.now().isoformat())
print(hash("abc"), hash(("x", 1)), {"b", "a", "c"} == {"a", "b", "c"})
print(list({str(i): i for i in range(5)}), sorted({"z", "y", "x"}))
os.makedirs("/work", exist_ok=True)
with open("/work/out.txt", "w") as f:
    f.write(str(random.random()))
print(os.path.getmtime("/work/out.txt"))
`;

describe("python: memory", () => {
  it("a slow memory bomb hits the same cap", async () => {
    await using sb = await Sandbox.create({ limits: { memoryMb: 96, timeoutMs: 20_000 } });
    const r = await sb.runCode("chunks = []\nwhile True:\n    chunks.append(bytearray(1024 * 1024))");
    assert.equal(r.error?.name, "MemoryError");
    assert.equal(r.limitHit, "memoryMb");
  });
});

describe("python: determinism", () => {
  it("same seed gives byte-identical output in a fresh host process", () => {
    const bin = fileURLToPath(new URL("../../bin/agentbox.js", import.meta.url));
    const run = () => spawnSync(process.execPath, [bin, "run", "-c", DETERMINISM_PROGRAM, "--seed", "99", "--json"], { encoding: "utf8", env: agentboxEnv() });
    const a = run();
    const b = run();
    assert.equal(a.status, 0, a.stderr);
    const ja = JSON.parse(a.stdout);
    const jb = JSON.parse(b.stdout);
    assert.equal(ja.stdout, jb.stdout);
    assert.equal(ja.stderr, jb.stderr);
    assert.equal(ja.vfsDigest, jb.vfsDigest);
    assert.match(ja.stdout, /^0\.\d+ \d+\n/);
  });

  it("a pooled sandbox (first configure on the warm-up's state) matches a fresh worker for the same seed and env", async () => {
    // What the cell finds first: no names left in __main__, the env and directory configure makes.
    const probe = `print(sorted(k for k in globals() if not k.startswith("__")))
${DETERMINISM_PROGRAM}
print(sorted(os.environ.items()), os.getcwd(), random.getstate()[1][:4])`;
    await Sandbox.configurePool({ size: 1, wait: true });
    try {
      for (const env of [undefined, { EXTRA: "1" }]) {
        await using pooled = await Sandbox.create({ seed: 42, ...(env ? { env } : {}) });
        await using fresh = await Sandbox.create({ seed: 42, pool: false, ...(env ? { env } : {}) });
        const a = await pooled.runCode(probe);
        const b = await fresh.runCode(probe);
        assert.ok(!a.error && !b.error, a.error?.traceback ?? b.error?.traceback);
        assert.equal(a.stdout, b.stdout, `env ${JSON.stringify(env)}`);
        assert.equal(a.vfsDigest, b.vfsDigest);
      }
    } finally {
      await Sandbox.configurePool({ size: 0 });
    }
  });

  it("the virtual clock starts at 2026-01-01 UTC and moves forward", async () => {
    await using sb = await Sandbox.create({ seed: 5 });
    const r = await sb.runCode("import time, datetime\nt1 = time.time(); t2 = time.time()\n(datetime.datetime.fromtimestamp(t1, datetime.timezone.utc).year, t2 > t1)");
    assert.equal(r.value, "(2026, True)");
    const slept = await sb.runCode("import time\nt = time.monotonic(); time.sleep(5); time.monotonic() - t >= 5");
    assert.equal(slept.value, "True", slept.error?.traceback);
  });

  it("without a seed a fresh one is drawn and reported; the clock is real", async () => {
    await using a = await Sandbox.create();
    await using b = await Sandbox.create();
    assert.notEqual(a.seed, b.seed);
    const ra = await a.runCode("import os\nos.urandom(16).hex()");
    assert.equal(ra.seed, a.seed);
    assert.notEqual(ra.value, (await b.runCode("import os\nos.urandom(16).hex()")).value);
    const year = new Date().getUTCFullYear();
    assert.equal((await a.runCode("import datetime\ndatetime.datetime.now(datetime.timezone.utc).year")).value, String(year));
    await using again = await Sandbox.create({ seed: a.seed });
    assert.equal((await again.runCode("import os\nos.urandom(16).hex()")).value, ra.value, "the reported seed reproduces the randomness");
  });
});
