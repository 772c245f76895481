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
    const agent = await sb.commands.run("ps -eo pid=,user=,args= | grep '[a]gent.py' | grep -v -- --repl");
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
