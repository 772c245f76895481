// Heavy tier on gVisor, for real: what only this backend has (read-only host mounts, heavy pool
// sizes, vfsDigest step by step). The cases every engine shares, and the heavy tier's own (commands,
// pool, snapshots), are in test/conformance/, run against gVisor by test/conformance/sandbox.test.ts.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { before, describe, it } from "node:test";
import { InvalidOptionsError, Sandbox, TimeoutError } from "../../src/index.js";
import { DEFAULT_HEAVY_POOL_SIZE, poolSizes } from "../../src/engines/pools.js";
import { isAlive } from "../helpers.js";
import { ensureImage, leftovers, skipHeavy } from "../heavy.js";
import { gvisor } from "../conformance/heavy.js";

const heavy = gvisor.opts;

describe("heavy tier (gVisor)", { skip: skipHeavy }, () => {
  before(() => ensureImage());

  it("mounts: read-only host directories under the scratch; writes refused; nothing else allowed", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-heavy-mount-"));
    fs.chmodSync(dir, 0o777); // even a world-writable host directory stays read-only to the guest
    fs.writeFileSync(path.join(dir, "in.txt"), "from host");
    fs.symlinkSync("/etc/hostname", path.join(dir, "link"));
    try {
      await using m = await Sandbox.create({ ...heavy, mounts: [{ hostPath: dir, guestPath: "/home/user/data" }] });
      assert.equal((await m.runCode("open('/home/user/data/in.txt').read()")).value, "'from host'");
      const w = await m.commands.run("echo x > /home/user/data/new.txt; touch /home/user/data/in.txt; cat /home/user/data/link");
      assert.match(w.stderr, /Read-only file system/);
      assert.equal(w.stdout, "sandbox\n", "a symlink in the mount resolves inside the sandbox (its /etc/hostname)");
      assert.deepEqual(fs.readdirSync(dir).sort(), ["in.txt", "link"]);
      assert.equal(fs.readFileSync(path.join(dir, "in.txt"), "utf8"), "from host");
      const bad = (mounts: unknown) => assert.rejects(Sandbox.create({ ...heavy, mounts } as never), InvalidOptionsError);
      await bad([{ hostPath: dir, guestPath: "/home/user/data", readOnly: false }]); // read-only only
      await bad([{ hostPath: dir, guestPath: "/opt/data" }]); // only under /home/user or /tmp
      await bad([{ hostPath: dir, guestPath: "/home/user" }]);
      await bad([{ hostPath: path.join(dir, "missing"), guestPath: "/tmp/x" }]);
      await assert.rejects(Sandbox.create({ ...heavy, backend: "microvm", mounts: [{ hostPath: dir, guestPath: "/tmp/x" }] }), InvalidOptionsError);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("vfsDigest: the writable tree (/home/user, /tmp) after each run; same actions, same digest; mounts listed, not read", async () => {
    const run = async (code: string[]) => {
      await using s = await Sandbox.create({ ...heavy, seed: 3 });
      const out: string[] = [];
      for (const c of code) out.push((await s.runCode(c)).vfsDigest);
      return out;
    };
    const steps = ["1", "open('/home/user/a.txt', 'w').write('x')", "import os\nos.makedirs('/tmp/d/e')", "open('/home/user/a.txt', 'w').write('y')", "import os\nos.remove('/home/user/a.txt')"];
    const a = await run(steps);
    const b = await run(steps);
    for (const d of a) assert.match(d, /^[0-9a-f]{64}$/);
    assert.deepEqual(a, b);
    assert.equal(new Set(a.slice(0, 4)).size, 4, "each change changes the digest");
  });

  it("a wedged sandbox (every process of it stopped) still dies on a time limit and kill(), leaving nothing", { timeout: 60_000 }, async () => {
    const s = await Sandbox.create({ ...heavy, pool: false });
    const res = (s as unknown as { engine: { resources: { containerId: string; dir: string; cgroupDirs: string[] } } }).engine.resources;
    const procs = res.cgroupDirs.find((d) => fs.existsSync(path.join(d, "cgroup.procs")))!;
    const pids = fs.readFileSync(path.join(procs, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
    assert.ok(pids.length >= 2, "the sentry and the gofer live in the sandbox's cgroup");
    for (const pid of pids) process.kill(pid, "SIGSTOP"); // `runsc kill` now blocks on the sandbox forever
    try {
      await assert.rejects(s.runCode("1", { timeoutMs: 500 }), TimeoutError);
      const t0 = Date.now();
      await s.kill();
      assert.ok(Date.now() - t0 < 15_000, `kill took ${Date.now() - t0} ms`);
      assert.deepEqual(leftovers(res), { processes: [], dir: false, cgroups: [] });
      assert.deepEqual(pids.filter(isAlive), [], "no process of the sandbox is left");
    } finally {
      for (const pid of pids.filter(isAlive)) process.kill(pid, "SIGKILL");
    }
  });

  it("heavy pools are sized apart from nano ones (configurePool({ heavy }))", async () => {
    try {
      await Sandbox.configurePool({ size: 0, heavy: 1 });
      const a = await Sandbox.create({ ...heavy, pool: true }); // makes the heavy pool, size 1
      const kinds = Object.entries(poolSizes());
      assert.deepEqual(kinds.map(([k, n]) => [k.split(":")[0], n]), [["gvisor", 1]], "only the heavy pool exists");
      await a.kill();
      await Sandbox.configurePool({ size: 3 }); // heavy not given: min(size, DEFAULT_HEAVY_POOL_SIZE); the Python pool starts
      const sizes = () => Object.entries(poolSizes()).map(([k, n]) => `${k.split(":")[0]}=${n}`).sort();
      assert.deepEqual(sizes(), [`gvisor=${DEFAULT_HEAVY_POOL_SIZE}`, "python=3"]);
      await Sandbox.configurePool({ size: 3, heavy: 0 }); // closes the heavy pool only
      assert.deepEqual(sizes(), ["python=3"]);
      await assert.rejects(Sandbox.configurePool({ heavy: -1 }), (e: unknown) => e instanceof InvalidOptionsError && /heavy/.test(e.message));
    } finally {
      await Sandbox.shutdownPool();
      await Sandbox.configurePool({ size: 0 });
    }
  });
});
