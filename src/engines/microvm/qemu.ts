// QEMU `-M microvm` as a Hypervisor: virtio-mmio devices only (read-only virtio-blk root,
// virtio-serial ports for the agent and the guest supervisor, virtio-rng), no network device,
// `-nodefaults -no-user-config`, guest RAM in a named memory backend (anonymous, or a file for
// snapshots whose RAM stays out of the state stream). The host listens on three Unix sockets in
// the VM's private directory and QEMU connects to them while it starts, so every channel is up
// before the guest runs. Control goes through QMP only; the console is kept as a bounded tail
// for error messages. The process starts inside its cgroup and network namespace (jail.ts).
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { TierUnavailableError, WorkerCrashedError } from "../../errors.js";
import type { MicrovmArtefacts } from "./artefacts.js";
import { SCRATCH_DISK, type AccelChoice, type Hypervisor, type LaunchOptions, type RamMode, type SavedState, type VmExit, type VmProcess, type VmSpec } from "./hypervisor.js";
import { HostCgroup } from "../heavy/cgroups.js";
import { GUEST_MAX_PROCESSES } from "../heavy/guest-limits.js";
import { CGROUP_PARENT, jailedArgv } from "./jail.js";
import { QmpClient } from "./qmp.js";

const MiB = 1024 * 1024;
const TAIL_BYTES = 8 * 1024;
const CONNECT_TIMEOUT_MS = 20_000;
const SAVE_TIMEOUT_MS = 60_000;
/** What QEMU needs beyond guest RAM (its own heap, device state, the TCG translation cache). */
export const VMM_OVERHEAD_MB = { kvm: 96, tcg: 192 } as const;
const TCG_TB_MB = 64;
const SAFE_PATH = /^[A-Za-z0-9/._+-]+$/;
const PROBE_TIMEOUT_MS = 15_000;
/** Changes when the probe itself changes, so answers cached by an older probe are not trusted. */
const PROBE_VERSION = 2; // 2: the probe VM gets the scratch disk every launch attaches

let qemuPath: string | undefined;
let qemuMissing: string | undefined;

/** Why QEMU cannot run here, or undefined when it can. */
export function qemuUnavailableReason(): string | undefined {
  if (qemuPath || qemuMissing) return qemuMissing;
  if (process.platform !== "linux" || process.arch !== "x64") return (qemuMissing = "the microVM backend runs on x86-64 Linux only");
  const candidates = [process.env.AGENTBOX_QEMU, ...(process.env.PATH ?? "").split(":").map((d) => path.join(d || ".", "qemu-system-x86_64")), "/usr/bin/qemu-system-x86_64"];
  qemuPath = candidates.find((c) => c && fs.existsSync(c));
  if (!qemuPath) return (qemuMissing = "QEMU is not installed; install it with `sudo apt-get install qemu-system-x86` (Debian/Ubuntu)");
  return undefined;
}

export function qemuBinary(): string {
  const why = qemuUnavailableReason();
  if (why) throw new TierUnavailableError(why);
  return qemuPath!;
}

/** Which QEMU build this is: a new package version changes the binary's size or time. */
function binaryIdentity(): [number, number] {
  const st = fs.statSync(qemuBinary());
  return [st.size, st.mtimeMs];
}

/** The host TSC rate in kHz (the guest cannot calibrate it under TCG). */
function tscKhz(): number {
  try {
    const mhz = /cpu MHz\s*:\s*([\d.]+)/.exec(fs.readFileSync("/proc/cpuinfo", "utf8"))?.[1];
    if (mhz) return Math.round(Number(mhz) * 1000);
  } catch {
    // not Linux
  }
  return 2_300_000;
}

function kernelCmdline(spec: VmSpec, extra: string[]): string {
  const args = ["console=ttyS0", "reboot=t", "panic=-1", "quiet", "loglevel=3", "pci=off", "8250.nr_uarts=1", `agentbox.disk_mb=${spec.diskMb}`, `agentbox.max_processes=${GUEST_MAX_PROCESSES}`];
  if (spec.accel === "tcg") args.push(`tsc_early_khz=${tscKhz()}`, "tsc=reliable", "mitigations=off");
  return [...args, ...extra].join(" ");
}

function checkPath(p: string): string {
  if (!SAFE_PATH.test(p)) throw new WorkerCrashedError(`unsupported characters in VM path ${JSON.stringify(p)}`);
  return p;
}

/** QEMU's argv for a launch. Exported for tests. */
export function qemuArgs(opts: LaunchOptions, extraCmdline: string[] = []): string[] {
  const { spec, dir } = opts;
  const a = spec.artefacts;
  const sock = (n: string) => checkPath(path.join(dir, n));
  let ram: string;
  if (opts.restore?.ram === "shared") ram = `memory-backend-file,id=ram,size=${spec.memoryMb}M,mem-path=${checkPath(path.join(opts.restore.dir, "ram.bin"))},share=off`;
  else if (opts.sharedRamFile) ram = `memory-backend-file,id=ram,size=${spec.memoryMb}M,mem-path=${checkPath(opts.sharedRamFile)},share=on`;
  else ram = `memory-backend-ram,id=ram,size=${spec.memoryMb}M`;
  const args = [
    "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on,memory-backend=ram",
    // TCG's default CPU model (qemu64) lacks instructions Debian's numpy/OpenBLAS use (their REPL
    // died of SIGILL on import); "max" offers every feature TCG emulates.
    ...(spec.accel === "kvm" ? ["-accel", "kvm", "-cpu", "host"] : ["-accel", `tcg,tb-size=${TCG_TB_MB}`, "-cpu", "max"]),
    "-m", `${spec.memoryMb}M`,
    "-smp", String(spec.vcpus),
    "-object", ram,
    "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-kernel", checkPath(a.vmlinux),
    "-initrd", checkPath(a.initramfs),
    "-append", kernelCmdline(spec, extraCmdline),
    "-chardev", `socket,id=qmp,path=${sock("qmp.sock")}`, "-mon", "chardev=qmp,mode=control",
    "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
    "-drive", `id=root,file=${checkPath(a.rootDisk)},format=raw,if=none,readonly=on`, "-device", "virtio-blk-device,drive=root",
    // The VM's own scratch disk (/tmp, /home/user); thrown away with the VM, so no flushes.
    "-drive", `id=scratch,file=${sock(SCRATCH_DISK)},format=raw,if=none,cache=unsafe`, "-device", "virtio-blk-device,drive=scratch,serial=agentbox-scratch",
    "-device", "virtio-serial-device,max_ports=3",
    "-chardev", `socket,id=agent,path=${sock("agent.sock")}`, "-device", "virtserialport,chardev=agent,name=agentbox.agent",
    "-chardev", `socket,id=ctl,path=${sock("ctl.sock")}`, "-device", "virtserialport,chardev=ctl,name=agentbox.ctl",
    "-object", "rng-random,id=rng,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng",
  ];
  if (opts.restore) args.push("-incoming", "defer");
  return args;
}

/** Every VM alive in this process, killed synchronously if the process exits with them. */
const live = new Set<QemuVm>();
process.once("exit", () => {
  for (const vm of live) vm.killSync();
});

export class QemuHypervisor implements Hypervisor {
  readonly name = "qemu";

  constructor(private readonly extraCmdline: string[] = []) {}

  unavailableReason(): string | undefined {
    return qemuUnavailableReason();
  }

  /** The QEMU build (size and time of the binary) and the guest kernel package. */
  probeIdentity(a: MicrovmArtefacts): string {
    return JSON.stringify([PROBE_VERSION, binaryIdentity(), a.kernelPackage]);
  }

  /** The QEMU build, and the whole argv of a boot (machine type, devices, kernel command line). */
  stateIdentity(spec: VmSpec, ram: RamMode): string {
    const dir = "/vm"; // a VM's private directory differs per VM; the layout inside it does not
    const argv = qemuArgs({ spec, dir, sharedRamFile: ram === "shared" ? path.join(dir, "ram.bin") : undefined }, this.extraCmdline);
    return JSON.stringify([binaryIdentity(), argv]);
  }

  /**
   * Boot the kernel with the initramfs under KVM; the initramfs init reboots at once on
   * `agentbox.probe=1` and QEMU (-no-reboot) exits on its own with a guest reset.
   */
  async probeKvm(a: MicrovmArtefacts): Promise<AccelChoice> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-kvm-probe-"));
    try {
      // Every launch attaches a scratch disk; the probe's init reboots before it looks at one.
      fs.writeFileSync(path.join(dir, SCRATCH_DISK), "");
      fs.truncateSync(path.join(dir, SCRATCH_DISK), MiB);
      const hv = new QemuHypervisor([...this.extraCmdline, "agentbox.probe=1"]);
      const vm = await hv.launch({ spec: { artefacts: a, accel: "kvm", memoryMb: 128, vcpus: 1, cpus: 1, diskMb: 16 }, dir });
      const exit = await Promise.race([vm.exited, sleep(PROBE_TIMEOUT_MS).then(() => undefined)]);
      if (!exit) {
        await vm.kill();
        return { accel: "tcg", reason: `KVM did not boot the guest kernel within ${PROBE_TIMEOUT_MS} ms (e.g. a nested paravirtual KVM that needs a special guest kernel)` };
      }
      if (exit.code === 0 && exit.guestReason === "guest-reset") return { accel: "kvm" };
      return { accel: "tcg", reason: `KVM probe boot failed (${exit.guestReason ?? `exit ${exit.code}`}${exit.stderr ? `: ${exit.stderr.trim().split("\n").slice(-1)[0]}` : ""})` };
    } catch (e) {
      return { accel: "tcg", reason: `KVM probe boot failed: ${(e as Error).message}` };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  async launch(opts: LaunchOptions): Promise<VmProcess> {
    const bin = qemuBinary();
    const { spec } = opts;
    let cg: HostCgroup | undefined;
    if (process.getuid?.() === 0) {
      try {
        cg = HostCgroup.create(CGROUP_PARENT, path.basename(opts.dir), (spec.memoryMb + VMM_OVERHEAD_MB[spec.accel]) * MiB, spec.cpus);
      } catch (e) {
        throw new TierUnavailableError(`cannot create a cgroup for the VM (${(e as Error).message}); the microVM backend needs a writable /sys/fs/cgroup`);
      }
    } else if (process.env.AGENTBOX_MICROVM_NO_CGROUP !== "1") {
      throw new TierUnavailableError("the microVM backend needs root to cap each VM's memory and CPU with a cgroup (or set AGENTBOX_MICROVM_NO_CGROUP=1 to run uncapped)");
    }
    const listeners = await Promise.all(["qmp", "agent", "ctl"].map((n) => listen(path.join(opts.dir, `${n}.sock`))));
    const argv = jailedArgv(cg, [bin, ...qemuArgs(opts, this.extraCmdline)]);
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], cwd: opts.dir, env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
    const vm = new QemuVm(child, cg);
    try {
      const [qmpSock, agent, control] = await Promise.race([
        Promise.all(listeners.map((l) => l.accepted)),
        vm.exited.then((x) => {
          throw new WorkerCrashedError(`QEMU exited while starting${x.stderr ? `: ${x.stderr.trim().split("\n").slice(-3).join(" ")}` : ""}`);
        }),
        new Promise<never>((_, reject) => setTimeout(() => reject(new WorkerCrashedError(`QEMU did not connect within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS).unref()),
      ]);
      vm.attach(await QmpClient.open(qmpSock!), agent!, control!);
      if (opts.restore) await vm.incoming(opts.restore);
      return vm;
    } catch (e) {
      const exit = await Promise.race([vm.exited, sleep(500).then(() => undefined)]);
      await vm.kill();
      const said = exit?.stderr.trim().split("\n").slice(-3).join(" ");
      if (said) throw new WorkerCrashedError(`QEMU failed to start: ${said}`);
      throw e;
    } finally {
      for (const l of listeners) l.server.close();
    }
  }
}

function listen(p: string): Promise<{ server: net.Server; accepted: Promise<net.Socket> }> {
  return new Promise((resolve, reject) => {
    let accept!: (s: net.Socket) => void;
    const accepted = new Promise<net.Socket>((r) => (accept = r));
    accepted.catch(() => undefined);
    const server = net.createServer((s) => {
      server.close();
      accept(s);
    });
    server.once("error", reject);
    server.listen(p, () => {
      fs.chmodSync(p, 0o600);
      resolve({ server, accepted });
    });
  });
}

class QemuVm implements VmProcess {
  agent!: net.Socket;
  control!: net.Socket;
  readonly exited: Promise<VmExit>;
  hasExited = false;
  private qmp: QmpClient | undefined;
  private console = "";
  private stderr = "";
  private guestReason: string | undefined;
  private killing: Promise<VmExit> | undefined;

  constructor(
    private readonly child: ChildProcess,
    private readonly cg: HostCgroup | undefined,
  ) {
    live.add(this);
    child.stdout!.on("data", (d: Buffer) => (this.console = (this.console + d.toString("utf8")).slice(-TAIL_BYTES)));
    child.stderr!.on("data", (d: Buffer) => (this.stderr = (this.stderr + d.toString("utf8")).slice(-TAIL_BYTES)));
    this.exited = new Promise((resolve) => {
      child.on("error", (e) => (this.stderr += `\n${e.message}`));
      child.on("close", (code, signal) => {
        this.hasExited = true;
        this.qmp?.close();
        this.agent?.destroy();
        this.control?.destroy();
        void (async () => {
          // The kernel lets go of a cgroup a moment after its last process.
          for (let i = 0; i < 100 && this.cg && !this.cg.remove(); i++) await sleep(20);
          live.delete(this);
          resolve({ code, signal, guestReason: this.guestReason, console: this.console, stderr: this.stderr });
        })();
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The cgroup holding this VMM (for tests and leak checks). */
  get cgroup(): HostCgroup | undefined {
    return this.cg;
  }

  attach(qmp: QmpClient, agent: net.Socket, control: net.Socket): void {
    this.qmp = qmp;
    this.agent = agent;
    this.control = control;
    qmp.onEvent = (e) => {
      if (e.event === "SHUTDOWN") this.guestReason = String(e.data?.reason ?? "shutdown");
      else if (e.event === "GUEST_PANICKED") this.guestReason = "guest-panic";
    };
  }

  /** Load a saved state into this (`-incoming defer`) VM; it ends paused. */
  async incoming(state: SavedState): Promise<void> {
    const qmp = this.qmp!;
    await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: state.ram === "shared" }] });
    await qmp.execute("migrate-incoming", { uri: `exec:cat ${checkPath(path.join(state.dir, "state.bin"))}` });
    const deadline = Date.now() + SAVE_TIMEOUT_MS;
    for (;;) {
      const s = await qmp.execute<{ status: string }>("query-status");
      if (s.status !== "inmigrate") {
        if (s.status === "paused" || s.status === "postmigrate" || s.status === "prelaunch" || s.status === "running") return;
        throw new WorkerCrashedError(`restoring the VM failed (QEMU status ${s.status})`);
      }
      if (Date.now() > deadline) throw new WorkerCrashedError("restoring the VM timed out");
      await sleep(2);
    }
  }

  async resume(): Promise<void> {
    const s = await this.qmp!.execute<{ status: string }>("query-status");
    if (s.status !== "running") await this.qmp!.execute("cont");
  }

  async save(into: SavedState): Promise<void> {
    const qmp = this.qmp!;
    await qmp.execute("stop");
    await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "x-ignore-shared", state: into.ram === "shared" }] });
    await qmp.execute("migrate", { uri: `exec:cat > ${checkPath(path.join(into.dir, "state.bin"))}` });
    const deadline = Date.now() + SAVE_TIMEOUT_MS;
    for (;;) {
      const m = await qmp.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
      if (m.status === "completed") return;
      if (m.status === "failed" || m.status === "cancelled") throw new WorkerCrashedError(`saving the VM failed: ${m["error-desc"] ?? m.status}`);
      if (Date.now() > deadline) throw new WorkerCrashedError("saving the VM timed out");
      await sleep(5);
    }
  }

  rssBytes(): number {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${this.child.pid}/status`, "utf8"));
      return m ? Number(m[1]) * 1024 : 0;
    } catch {
      return 0;
    }
  }

  kill(): Promise<VmExit> {
    this.killing ??= (async () => {
      if (!this.hasExited) this.child.kill("SIGKILL");
      return this.exited;
    })();
    return this.killing;
  }

  unref(): void {
    this.qmp?.unref();
    this.child.unref();
    for (const s of [this.child.stdout, this.child.stderr, this.agent, this.control]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  }

  ref(): void {
    this.qmp?.ref();
    this.child.ref();
    for (const s of [this.child.stdout, this.child.stderr, this.agent, this.control]) (s as unknown as { ref?: () => void } | null)?.ref?.();
  }

  killSync(): void {
    if (!this.hasExited) this.child.kill("SIGKILL");
    this.cg?.remove();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
