// MicroVM backend security corpus: the heavy tier's shared security cases (test/heavy-conformance.ts,
// also run on gVisor), then the VM's own: no shared file systems or network device, a read-only
// root disk; QEMU itself runs capped in a cgroup and in its own network namespace; a kernel
// panic, a hung guest or a guest that kills its own agent ends in a clear error with nothing
// left; and a malicious agent (garbage, huge frames, silence) cannot hurt the host.
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import { ProtocolError, Sandbox, SandboxClosedError, TimeoutError, WorkerCrashedError } from "../../src/index.js";
import type { MicrovmEngine } from "../../src/engines/microvm/engine.js";
import { microvmSpec } from "../../src/engines/microvm/engine.js";
import { AGENT_PROTOCOL_VERSION } from "../../src/protocol/agent.js";
import type { Hypervisor, VmExit, VmProcess, VmSpec } from "../../src/engines/microvm/hypervisor.js";
import { QemuHypervisor } from "../../src/engines/microvm/qemu.js";
import { MicroVm, transition } from "../../src/engines/microvm/vm.js";
import { heavyLimitsSchema } from "../../src/policy/options.js";
import "../helpers.js";
import { clean, ensureArtefacts, leftovers, skipMicrovm, waitFor } from "../microvm.js";
import { heavySecurity, microvm } from "../conformance/heavy.js";

const engineOf = (sb: Sandbox) => (sb as unknown as { engine: MicrovmEngine }).engine;
const opts = { tier: "heavy", backend: "microvm", pool: false, limits: { memoryMb: 256, timeoutMs: 20_000, outputBytes: 100_000 } } as const;

describe("microVM security", { skip: skipMicrovm }, () => {
  let sb: Sandbox;
  before(async () => {
    await ensureArtefacts();
    sb = await Sandbox.create(opts);
  });
  after(async () => {
    await sb?.kill();
  });

  heavySecurity(microvm, () => sb);

  it("[microVM] no shared file systems (9p, virtiofs, fuse), two disks (the read-only root, its own scratch), its own kernel", async () => {
    const marker = path.join(os.tmpdir(), `agentbox-host-secret-${process.pid}`);
    fs.writeFileSync(marker, "secret");
    try {
      const r = await sb.commands.run(`cat ${marker}; cat /etc/hostname; grep -cE '9p|virtiofs|fuse' /proc/mounts; ps -eo args | grep -c '[n]ode'; for d in /sys/block/vd*; do echo "$(cat $d/ro) $(cat $d/serial)"; done`);
      assert.doesNotMatch(r.stdout, /secret/);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines[0], "sandbox");
      assert.equal(lines[1], "0", "no 9p/virtiofs/fuse mounts");
      assert.equal(lines[2], "0", "none of the host's processes (its own kernel)");
      // The scratch disk is a fresh file in the VM's private directory (a copy of the base snapshot's).
      assert.deepEqual(lines.slice(3), ["1 ", "0 agentbox-scratch"], "the read-only root, then the VM's own scratch disk");
      await assert.rejects(sb.files.read(marker));
    } finally {
      fs.rmSync(marker, { force: true });
    }
  });

  it("[microVM] no network device, not even QEMU's user-net gateway", async () => {
    const r = await sb.runCode(`import os, socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=2)
        return "connected"
    except OSError as e:
        return type(e).__name__
(sorted(os.listdir("/sys/class/net")), attempt("1.1.1.1", 80), attempt("10.0.2.2", 22))`);
    assert.equal(r.error, undefined);
    assert.doesNotMatch(r.value ?? "", /connected/);
    assert.match(r.value ?? "", /^\(\['lo'\]/);
  });

  it("the root disk is read-only, even to the device", async () => {
    const r = await sb.commands.run("touch /usr/x 2>&1; echo x > /etc/passwd 2>&1; cat /sys/block/vda/ro");
    assert.match(r.stdout, /Read-only file system/);
    assert.match(r.stdout.trim(), /1$/);
  });

  it("QEMU runs in a capped cgroup and a network namespace of its own", () => {
    const { pid, cgroupDirs } = engineOf(sb).resources;
    assert.ok(pid);
    const cgroups = fs.readFileSync(`/proc/${pid}/cgroup`, "utf8");
    assert.match(cgroups, /agentbox-microvm/);
    const mem = cgroupDirs.find((d) => d.includes("memory")) ?? cgroupDirs[0]!;
    const limitFile = fs.existsSync(path.join(mem, "memory.limit_in_bytes")) ? "memory.limit_in_bytes" : "memory.max";
    const limit = Number(fs.readFileSync(path.join(mem, limitFile), "utf8"));
    assert.ok(limit > 256 * 2 ** 20 && limit < 1024 * 2 ** 20, `memory cap ${limit}`);
    assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/net`), fs.readlinkSync("/proc/self/ns/net"));
  });

  it("a hung guest: the command times out, the VM is killed, nothing is left", async () => {
    const s = await Sandbox.create(opts);
    const res = engineOf(s).resources;
    process.kill(res.pid!, "SIGSTOP"); // the whole VM freezes
    await assert.rejects(s.commands.run("true", { timeoutMs: 500 }), TimeoutError);
    assert.ok(await waitFor(() => s.closed));
    await assert.rejects(s.commands.run("true"), SandboxClosedError);
    await s.kill();
    assert.deepEqual(leftovers(res), clean);
  });

  it("guest code cannot kill its agent: the agent is root with three capabilities, commands are uid 1000", async () => {
    const s = await Sandbox.create(opts);
    const res = engineOf(s).resources;
    try {
      const r = await s.commands.run("kill -9 $PPID; echo rc=$?; id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status");
      assert.match(r.stderr, /Operation not permitted/);
      // No effective capabilities; the bounding set keeps only KILL/SETGID/SETUID (0xe0), which
      // no_new_privs stops any exec from ever granting.
      assert.match(r.stdout, /^rc=1\n1000\nCapEff:\s+0+\nCapBnd:\s+0+e0\nNoNewPrivs:\s+1\n$/);
      assert.equal((await s.commands.run("echo alive")).stdout, "alive\n");
    } finally {
      await s.kill();
    }
    assert.deepEqual(leftovers(res), clean);
  });

  it("a kernel panic at boot: a clear error naming it, no QEMU left", async () => {
    const { spec } = await microvmSpec({ limits: heavyLimitsSchema.parse({ memoryMb: 128 }), packages: [] });
    // This process's VM directories only: other agentbox processes on the machine make their own.
    const ours = () =>
      fs.readdirSync(os.tmpdir()).filter((d) => {
        if (!d.startsWith("agentbox-vm-")) return false;
        try {
          return Number(fs.readFileSync(path.join(os.tmpdir(), d, "owner.pid"), "utf8")) === process.pid;
        } catch {
          return false;
        }
      });
    const before = ours();
    const err = await MicroVm.boot(new QemuHypervisor(["rdinit=/no-such-init"]), spec, { timeoutMs: 60_000 }).then(
      async (vm) => {
        await vm.stop(new Error("unexpected"));
        return undefined;
      },
      (e: unknown) => e,
    );
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.match((err as Error).message, /panic/i);
    assert.deepEqual(ours().filter((d) => !before.includes(d)), []);
  });
});

/** A hypervisor whose "guest agent" is the test: it writes whatever a malicious agent would. */
class FakeHypervisor implements Hypervisor {
  readonly name = "fake";
  killed = 0;
  constructor(private readonly agentSays: (toHost: net.Socket) => void) {}

  unavailableReason = () => undefined;
  probeKvm = async () => ({ accel: "tcg" as const, reason: "fake" });
  probeIdentity = () => "fake";
  stateIdentity = () => "fake";

  async launch(): Promise<VmProcess> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-fake-"));
    const p = path.join(dir, "s");
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(p, r));
    const accepted = new Promise<net.Socket>((r) => server.once("connection", r));
    const hostEnd = net.connect(p);
    const guestEnd = await accepted;
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
    let exit!: (x: VmExit) => void;
    const exited = new Promise<VmExit>((r) => (exit = r));
    const vmp = {
      pid: undefined,
      agent: hostEnd,
      control: new PassThrough(),
      exited,
      hasExited: false,
      resume: async () => undefined,
      save: async () => undefined,
      rssBytes: () => 0,
      kill: async () => {
        if (!vmp.hasExited) {
          this.killed++;
          vmp.hasExited = true;
          guestEnd.destroy();
          hostEnd.destroy();
          exit({ code: null, signal: "SIGKILL", guestReason: undefined, console: "", stderr: "" });
        }
        return exited;
      },
    };
    this.agentSays(guestEnd);
    return vmp;
  }
}

describe("microVM: a malicious agent cannot hurt the host", () => {
  const spec = { artefacts: {}, accel: "tcg", memoryMb: 64, vcpus: 1, cpus: 1, diskMb: 16 } as unknown as VmSpec;
  const frame = (o: unknown) => {
    const body = Buffer.from(JSON.stringify(o));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    return Buffer.concat([head, body]);
  };

  it("garbage: ProtocolError, the VM killed", async () => {
    const hv = new FakeHypervisor((s) => s.write(Buffer.from("\x00\x00\x00\x05hello, not json")));
    await assert.rejects(MicroVm.boot(hv, spec, { timeoutMs: 5000 }), ProtocolError);
    assert.equal(hv.killed, 1);
  });

  it("a huge frame header: refused before anything is buffered", async () => {
    const hv = new FakeHypervisor((s) => {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(0xfffffff0);
      s.write(head);
      s.write(Buffer.alloc(1 << 20, 0x41));
    });
    await assert.rejects(MicroVm.boot(hv, spec, { timeoutMs: 5000 }), ProtocolError);
    assert.equal(hv.killed, 1);
  });

  it("a frame that breaks the schema: ProtocolError", async () => {
    const hv = new FakeHypervisor((s) => s.write(frame({ type: "ready", v: AGENT_PROTOCOL_VERSION, agent: "x", python: "3", extra: "nope" })));
    await assert.rejects(MicroVm.boot(hv, spec, { timeoutMs: 5000 }), ProtocolError);
  });

  it("silence: the boot times out and the VM is killed", async () => {
    const hv = new FakeHypervisor(() => undefined);
    await assert.rejects(MicroVm.boot(hv, spec, { timeoutMs: 300 }), /did not finish its boot within 300 ms/);
    assert.equal(hv.killed, 1);
  });

  it("garbage after a good start: the pending request fails, the VM is stopped", async () => {
    let guest!: net.Socket;
    const hv = new FakeHypervisor((s) => {
      guest = s;
      s.write(frame({ type: "ready", v: AGENT_PROTOCOL_VERSION, agent: "evil", python: "3" }));
    });
    const vm = await MicroVm.boot(hv, spec, { timeoutMs: 5000 });
    assert.equal(vm.state, "ready");
    const pending = vm.dispatch({ type: "request", msg: { type: "ping", id: vm.client.newId() } });
    assert.equal(vm.state, "running");
    guest.write(frame({ type: "pong", id: "not a number" }));
    await assert.rejects(pending, ProtocolError);
    assert.ok(await waitFor(() => vm.state === "stopped"));
    assert.equal(hv.killed, 1);
  });

  it("the state machine refuses what a state does not allow", () => {
    assert.equal(transition("ready", "request"), "running");
    assert.equal(transition("running", "request"), "running");
    assert.equal(transition("ready", "snapshot"), "snapshotting");
    assert.ok(transition("running", "snapshot") instanceof Error);
    assert.ok(transition("snapshotting", "request") instanceof Error);
    assert.ok(transition("stopped", "request") instanceof Error);
    assert.equal(transition("starting", "stop"), "stopped");
  });
});
