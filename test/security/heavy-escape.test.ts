// Heavy tier (gVisor) security corpus: the shared heavy-tier security cases (test/heavy-conformance.ts,
// also run on the microVM: what the guest must not see or reach, exhaustion it must not turn into
// host trouble, a host killed mid-command), then gVisor's own: a hostile agent channel.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { before, after, describe, it } from "node:test";
import { ProtocolError, Sandbox, WorkerCrashedError } from "../../src/index.js";
import { GvisorBox } from "../../src/engines/heavy-gvisor/box.js";
import { boxSpec, type GvisorEngine } from "../../src/engines/heavy-gvisor/engine.js";
import { heavyLimitsSchema } from "../../src/policy/options.js";
import "../helpers.js";
import { ensureImage, skipHeavy } from "../heavy.js";
import { gvisor, heavySecurity } from "../conformance/heavy.js";

const engineOf = (sb: Sandbox) => (sb as unknown as { engine: GvisorEngine }).engine;
const heavy = gvisor.opts;

describe("heavy tier security (gVisor)", { skip: skipHeavy }, () => {
  let sb: Sandbox;
  before(async () => {
    await ensureImage();
    sb = await Sandbox.create(heavy);
  });
  after(async () => {
    await sb?.kill();
  });

  it("guest code runs as uid 1000 with no capabilities and cannot touch the root agent", async () => {
    const agent = await sb.commands.run("ps -eo pid=,user=,args= | grep '[a]gent.py' | grep -v -- --repl | grep -v -- --spawner");
    const [pid, user] = agent.stdout.trim().split(/\s+/);
    assert.equal(user, "root", agent.stdout);
    const r = await sb.commands.run(
      `id -u; id -G; grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status | awk '{print $2}' | sort -u
       kill -9 ${pid} 2>/dev/null && echo KILLED; kill -STOP ${pid} 2>/dev/null && echo STOPPED
       head -c 1 /proc/${pid}/mem >/dev/null 2>&1 && echo MEM
       for f in $(ls /proc/${pid}/fd); do [ "$(readlink /proc/${pid}/fd/$f)" = /dev/null ] && continue; head -c 1 /proc/${pid}/fd/$f >/dev/null 2>&1 && echo FD$f; echo x 2>/dev/null >/proc/${pid}/fd/$f && echo WFD$f; done
       [ "$(ls /proc/${pid}/fd | wc -l)" -gt 3 ] && echo listed
       python3 -c "import ctypes; l = ctypes.CDLL(None, use_errno=True); print('nnp', l.prctl(39, 0, 0, 0, 0)); print('ptrace', l.ptrace(16, ${pid}, 0, 0), ctypes.get_errno())"`,
    );
    assert.deepEqual(r.stdout.trim().split("\n"), ["1000", "1000", "0000000000000000", "listed", "nnp 1", "ptrace -1 1"]); // EPERM
    // (gVisor lists the agent's fd numbers and shows its maps and environ, which hold nothing
    // secret; the fds themselves -- the host channel, the REPL's pipes -- cannot be opened.)
    const repl = await sb.runCode(`import os, signal\ntry:\n    os.kill(${pid}, signal.SIGKILL)\nexcept OSError as e:\n    r = e.errno\n(os.getuid(), os.getgid(), os.getgroups(), r)`);
    assert.equal(repl.value, "(1000, 1000, [], 1)");
    // The host's files API acts as the guest user too.
    await sb.files.write("/home/user/owned.txt", "x");
    assert.equal((await sb.commands.run("stat -c %u:%g /home/user/owned.txt")).stdout, "1000:1000\n");
    assert.equal((await sb.commands.run("echo alive")).stdout, "alive\n");
  });

  it("commands start through the spawner as the guest (no groups, no capabilities, the memory limit); a guest that kills it only loses the fast path", async () => {
    const s = await Sandbox.create(heavy);
    try {
      // Who started this shell, and with what: its parent's command line, its credentials, the
      // address-space limit a program it starts inherits.
      const probe = `p=$(ps -o ppid= -p $$ | tr -d ' '); echo "parent $p $(tr '\\0' ' ' </proc/$p/cmdline)"
        grep -E '^(Uid|Gid|Groups|CapEff|CapPrm):' /proc/self/status | tr -s '\\t ' '  ' | sed 's/ *$//'
        python3 -c "import resource; print('as', *resource.getrlimit(resource.RLIMIT_AS))"
        python3 -c "import ctypes; l = ctypes.CDLL(None, use_errno=True); print('ptrace', l.ptrace(16, 1, 0, 0), ctypes.get_errno())"
        kill -STOP 1 2>/dev/null && echo STOPPED; kill -0 1 2>/dev/null && echo SIGNALLED; echo end`;
      const creds = ["Uid: 1000 1000 1000 1000", "Gid: 1000 1000 1000 1000", "Groups:", "CapPrm: 0000000000000000", "CapEff: 0000000000000000"];
      const check = (out: string, viaSpawner: boolean): string => {
        const lines = out.trim().split("\n");
        assert.equal(/agent\.py --spawner/.test(lines[0]!), viaSpawner, out);
        if (!viaSpawner) assert.match(lines[0]!, /^parent 1 .*agent\.py $/, out);
        assert.deepEqual(lines.slice(1, 6), creds, out);
        assert.match(lines[6]!, /^as \d+ \d+$/, out); // a finite limit (RLIM_INFINITY is -1)
        assert.deepEqual(lines.slice(7), ["ptrace -1 1", "end"], out); // EPERM; the agent (pid 1) cannot be stopped or signalled
        return lines[6]!;
      };
      // The spawner starts up beside the agent: the first commands may take the old path.
      let first = await s.commands.run(probe);
      for (let i = 0; i < 50 && !first.stdout.includes("--spawner"); i++) {
        await new Promise((r) => setTimeout(r, 100));
        first = await s.commands.run(probe);
      }
      const limit = check(first.stdout, true);
      // A request over the spawner's size cap takes the old path, with the same result.
      const big = await s.commands.run(probe, { env: { BIG: "x".repeat(70_000) } });
      assert.equal(check(big.stdout, false), limit);
      // The spawner runs as the guest, so guest code can kill it, with a command it started
      // still running: that command's exit is still reported, and later commands start the old way.
      const running = await s.commands.run("sleep 1; echo slept; exit 7", { background: true });
      const kill = await s.commands.run("for p in $(ps -eo pid=,args= | awk '/agent[.]py --spawner/ {print $1}'); do kill -9 $p && echo KILLED; done");
      assert.equal(kill.stdout, "KILLED\n");
      const done = await running.wait();
      assert.equal(done.exitCode, 7);
      assert.equal(done.stdout, "slept\n");
      assert.equal(check((await s.commands.run(probe)).stdout, false), limit);
      // The rest behaves as before: stdin, env, cwd, a process-group kill, a timeout.
      const r = await s.commands.run("cat; echo $X; pwd", { stdin: "in\n", env: { X: "y" }, cwd: "/tmp" });
      assert.equal(r.stdout, "in\ny\n/tmp\n");
      const bg = await s.commands.run("sleep 30 & sleep 30; echo never", { background: true });
      assert.equal(await bg.kill(), true);
      assert.notEqual((await bg.wait()).stdout, "never\n");
      const capped = await s.commands.run("sleep 30", { timeoutMs: 300 });
      assert.equal(capped.exitCode, 137);
      assert.equal((await s.commands.run("ps -eo args= | grep -c '^sleep 30' || true")).stdout, "0\n");
    } finally {
      await s.kill();
    }
  });

  it("a guest that floods the agent channel with garbage: ProtocolError, host fine, nothing left", async () => {
    const spec = { ...boxSpec({ limits: heavyLimitsSchema.parse({}), env: {}, seed: null, packages: [] }), agentArgv: ["/bin/sh", "-c", "head -c 3000000 /dev/urandom; sleep 100"] };
    const err = await GvisorBox.start(spec).then(
      async (b) => {
        await b.dispose(new Error("unexpected"));
        return undefined;
      },
      (e: unknown) => e,
    );
    assert.ok(err instanceof ProtocolError || err instanceof WorkerCrashedError, String(err));
    // A garbage frame that parses as JSON but breaks the schema.
    const frame = Buffer.from(JSON.stringify({ type: "ready", v: 1, agent: "x", python: "3", extra: true }));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(frame.length);
    const printf = [...head, ...frame].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("");
    const err2 = await GvisorBox.start({ ...spec, agentArgv: ["/bin/sh", "-c", `printf '${printf}'; sleep 100`] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err2 instanceof ProtocolError, String(err2));
    const shared = path.basename(engineOf(sb).resources.dir);
    const mine = fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith("agentbox-gvisor-") && d !== shared && fs.readFileSync(path.join(os.tmpdir(), d, "owner.pid"), "utf8") === String(process.pid));
    assert.deepEqual(mine, [], "the hostile boxes left their directories");
  });

  // Last: the shared cases include a fork bomb on the long-lived sandbox.
  heavySecurity(gvisor, () => sb);
});
