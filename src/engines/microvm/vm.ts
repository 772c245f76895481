// One microVM's life as a small state machine over one command union:
//
//   starting ──boot/restore──▶ ready ◀──request done── running
//                               │  ▲                      ▲
//                               │  └──────────────────────┘ request
//                               ├──snapshot──▶ snapshotting ──▶ ready (resumed) | stopped
//                               └──stop──▶ stopped   (any state can be stopped; stopped is final)
//
// The VMM (behind the Hypervisor interface) gives byte streams to the guest agent, spoken to by
// the backend-neutral AgentClient, and to the guest supervisor's control port (fresh entropy and
// the clock after a restore). Everything the guest says is untrusted: frames are size-capped and
// schema-checked, and a VM that breaks the protocol, panics, hangs or runs out of memory ends in
// a clear error with its VMM process killed and its cgroup and directory removed.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { z } from "zod";
import { MemoryLimitError, ProtocolError, WorkerCrashedError } from "../../errors.js";
import type { AgentRequest } from "../../protocol/agent.js";
import { encodeFrame, FrameDecoder } from "../../protocol/frames.js";
import { AgentClient, type OutputListener } from "../heavy/agent-client.js";
import { SCRATCH_DISK, type Hypervisor, type SavedState, type VmExit, type VmProcess, type VmSpec } from "./hypervisor.js";
import { HostCgroup } from "../heavy/cgroups.js";
import { markOwner, staleDirs } from "../heavy/stale.js";
import { CGROUP_PARENT } from "./jail.js";

export type VmState = "starting" | "ready" | "running" | "snapshotting" | "stopped";

/** Every request to a VM is one of these. */
export type VmCommand =
  | { type: "request"; msg: AgentRequest; onOutput?: OutputListener | undefined }
  | { type: "snapshot"; into: SavedState; then: "resume" | "stop" }
  | { type: "stop"; reason: Error };

/** The state a command moves the VM into while it runs, or an error naming the clash. */
export function transition(state: VmState, command: VmCommand["type"]): VmState | Error {
  if (command === "stop") return "stopped";
  if (state === "stopped") return new WorkerCrashedError("the VM has stopped");
  if (command === "request" && (state === "ready" || state === "running")) return "running";
  if (command === "snapshot" && state === "ready") return "snapshotting";
  return new WorkerCrashedError(`a ${command} is not possible while the VM is ${state}`);
}

/** Time a fresh VM gets to boot to a ready agent (TCG boots in seconds, KVM in well under one). */
const BOOT_TIMEOUT_MS = Number(process.env.AGENTBOX_MICROVM_BOOT_TIMEOUT_MS ?? 60_000);
const RESTORE_TIMEOUT_MS = 30_000;
const CONTROL_MAX_FRAME = 64 * 1024;

const controlReply = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("pong"), id: z.int() }),
  z.strictObject({ type: z.literal("ok"), id: z.int() }),
  z.strictObject({ type: z.literal("error"), id: z.int(), message: z.string().max(1024) }),
]);

export class MicroVm {
  readonly client: AgentClient;
  private stateNow: VmState = "starting";
  private inFlight = 0;
  private deathError: Error | undefined;
  private stopping: Promise<void> | undefined;
  private controlId = 0;
  private readonly controlWaiters = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly controlDecoder = new FrameDecoder(CONTROL_MAX_FRAME);
  /** Called once when the VM dies on its own (or its channel fails), with the explanation. */
  onDeath: ((e: Error) => void) | undefined;

  private constructor(
    readonly spec: VmSpec,
    readonly dir: string,
    private vmm: VmProcess,
  ) {
    this.client = new AgentClient(vmm.agent, vmm.agent);
    this.client.onFail = (e) => void this.onFailure(e);
    vmm.control.on("data", (d: Buffer) => this.onControl(d));
    void vmm.exited.then(() => this.client.fail(new WorkerCrashedError("the VM stopped")));
  }

  /** Boot a VM from its kernel; resolves once the guest agent said ready. */
  static async boot(hv: Hypervisor, spec: VmSpec, opts: { sharedRam?: boolean; timeoutMs?: number } = {}): Promise<MicroVm> {
    const dir = privateDir();
    try {
      await makeScratchDisk(path.join(dir, SCRATCH_DISK), spec.diskMb);
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    const vm = await MicroVm.launch(hv, spec, dir, { sharedRamFile: opts.sharedRam ? path.join(dir, "ram.bin") : undefined });
    await vm.settle(vm.client.ready, opts.timeoutMs ?? BOOT_TIMEOUT_MS, "boot");
    return vm;
  }

  /** Start a VM from a saved state; resolves once its agent answers a ping. */
  static async restore(hv: Hypervisor, spec: VmSpec, from: SavedState): Promise<MicroVm> {
    const dir = privateDir();
    try {
      await copySparse(path.join(from.dir, SCRATCH_DISK), path.join(dir, SCRATCH_DISK));
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw new WorkerCrashedError(`cannot restore the VM's scratch disk: ${(e as Error).message}`);
    }
    const vm = await MicroVm.launch(hv, spec, dir, { restore: from });
    await vm.settle(
      (async () => {
        await vm.vmm.resume();
        await vm.client.request({ type: "ping", id: vm.client.newId() });
      })(),
      RESTORE_TIMEOUT_MS,
      "restore",
    );
    return vm;
  }

  private static async launch(hv: Hypervisor, spec: VmSpec, dir: string, extra: { restore?: SavedState | undefined; sharedRamFile?: string | undefined }): Promise<MicroVm> {
    try {
      return new MicroVm(spec, dir, await hv.launch({ spec, dir, ...extra }));
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  get state(): VmState {
    return this.stateNow;
  }

  get pid(): number | undefined {
    return this.vmm.pid;
  }

  get alive(): boolean {
    return this.stateNow !== "stopped" && !this.vmm.hasExited && !this.client.failed;
  }

  /** Why the VM stopped, once it has. */
  get failure(): Error | undefined {
    return this.deathError;
  }

  /** The VMM process (RSS, cgroup) for tests and the bench. */
  get process(): VmProcess {
    return this.vmm;
  }

  /** Run one command against the VM. */
  async dispatch(cmd: Extract<VmCommand, { type: "request" }>): Promise<Awaited<ReturnType<AgentClient["request"]>>>;
  async dispatch(cmd: Exclude<VmCommand, { type: "request" }>): Promise<void>;
  async dispatch(cmd: VmCommand): Promise<unknown> {
    const next = transition(this.stateNow, cmd.type);
    if (next instanceof Error) throw this.deathError ?? next;
    switch (cmd.type) {
      case "request": {
        this.stateNow = next;
        this.inFlight++;
        try {
          return await this.client.request(cmd.msg, cmd.onOutput);
        } finally {
          if (--this.inFlight === 0 && this.stateNow === "running") this.stateNow = "ready";
        }
      }
      case "snapshot": {
        this.stateNow = next;
        try {
          if (cmd.into.ram === "shared" && cmd.then !== "stop") throw new WorkerCrashedError("a VM keeps writing its shared RAM file: save it in shared mode only to stop it");
          await this.vmm.save(cmd.into);
          // The paused VM's RAM is its file; it becomes the snapshot's (the VM never runs again).
          if (cmd.into.ram === "shared") fs.renameSync(path.join(this.dir, "ram.bin"), path.join(cmd.into.dir, "ram.bin"));
          // The disk as the saved RAM knows it (the VM is paused): moved when it stops, else copied.
          if (cmd.then === "stop") fs.renameSync(path.join(this.dir, SCRATCH_DISK), path.join(cmd.into.dir, SCRATCH_DISK));
          else await copySparse(path.join(this.dir, SCRATCH_DISK), path.join(cmd.into.dir, SCRATCH_DISK));
        } catch (e) {
          await this.stop(e as Error);
          throw e;
        }
        if (cmd.then === "stop") {
          await this.stop(new WorkerCrashedError("the VM was saved and stopped"));
          return;
        }
        await this.vmm.resume();
        this.stateNow = "ready";
        return;
      }
      case "stop":
        return this.stop(cmd.reason);
    }
  }

  /** Fresh entropy and the host's clock for the guest kernel (clones must not share them). */
  async refresh(): Promise<void> {
    await this.control({ type: "refresh", entropy: randomBytes(64).toString("base64"), timeMs: Date.now() });
  }

  private control(msg: Record<string, unknown>): Promise<void> {
    const id = ++this.controlId;
    return new Promise((resolve, reject) => {
      if (this.stateNow === "stopped") return reject(this.deathError ?? new WorkerCrashedError("the VM has stopped"));
      this.controlWaiters.set(id, { resolve, reject });
      this.vmm.control.write(encodeFrame({ ...msg, id }));
    });
  }

  private onControl(d: Buffer): void {
    let frames: unknown[];
    try {
      frames = this.controlDecoder.push(d);
    } catch (e) {
      return void this.failWith(new ProtocolError(`the guest supervisor sent a malformed frame: ${(e as Error).message}`));
    }
    for (const f of frames) {
      const m = controlReply.safeParse(f);
      if (!m.success) return void this.failWith(new ProtocolError("the guest supervisor sent an invalid message"));
      const w = this.controlWaiters.get(m.data.id);
      if (!w) continue;
      this.controlWaiters.delete(m.data.id);
      if (m.data.type === "error") w.reject(new WorkerCrashedError(`the guest supervisor refused: ${m.data.message}`));
      else w.resolve();
    }
  }

  private async settle(p: Promise<unknown>, timeoutMs: number, what: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        p,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new WorkerCrashedError(`the VM did not finish its ${what} within ${timeoutMs} ms (hung guest); it was killed`)), timeoutMs);
        }),
      ]);
      this.stateNow = "ready";
    } catch (e) {
      // A VMM that ended explains itself better than the broken channel does.
      const exit = await Promise.race([this.vmm.exited, sleep(1000).then(() => undefined)]);
      const err = exit ? this.explain(exit, e as Error) : (e as Error);
      await this.stop(err);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The channel failed or the VMM ended: find out why, then stop everything. */
  private async onFailure(e: Error): Promise<void> {
    if (this.stateNow === "stopped" || this.stateNow === "starting") return;
    const exit = await Promise.race([this.vmm.exited, sleep(1000).then(() => undefined)]);
    if ((this.stateNow as VmState) === "stopped") return;
    const err = exit ? this.explain(exit, e) : e;
    this.onDeath?.(err);
    await this.stop(err);
  }

  /** Turn a VMM's end into an error a caller can act on. */
  private explain(exit: VmExit, fallback: Error): Error {
    const cg = this.vmm.cgroup;
    if (exit.signal === "SIGKILL" && cg && cg.oomKills() > 0) {
      return new MemoryLimitError(this.spec.memoryMb, "the VM's memory cgroup ran out and its VMM was killed");
    }
    const lines = exit.console.split("\n").map((l) => l.trim()).filter(Boolean);
    const panic = lines.find((l) => l.includes("Kernel panic"));
    const said = lines.filter((l) => l.startsWith("agentbox-init:")).slice(-1)[0];
    if (panic) return new WorkerCrashedError(`the guest kernel panicked and the VM stopped: ${panic.replace(/^\[[^\]]*\]\s*/, "")}`);
    if (said) return new WorkerCrashedError(`the VM stopped: ${said}`);
    if (exit.guestReason) return new WorkerCrashedError(`the VM stopped (${exit.guestReason})`);
    const err = exit.stderr.trim().split("\n").slice(-2).join(" ");
    if (err) return new WorkerCrashedError(`the VMM exited: ${err}`);
    return fallback instanceof WorkerCrashedError ? fallback : new WorkerCrashedError(`the VM stopped: ${fallback.message}`);
  }

  private async failWith(e: Error): Promise<void> {
    this.client.fail(e);
  }

  /** End the VMM, its cgroup and its directory. Idempotent. */
  stop(reason: Error): Promise<void> {
    this.deathError ??= reason;
    this.stateNow = "stopped";
    this.stopping ??= (async () => {
      this.client.fail(this.deathError!);
      for (const w of this.controlWaiters.values()) w.reject(this.deathError!);
      this.controlWaiters.clear();
      await this.vmm.kill();
      fs.rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.stopping;
  }

  // Poolable ---------------------------------------------------------------------------------
  get ready(): Promise<unknown> {
    return Promise.resolve();
  }
  unref(): void {
    (this.vmm as { unref?: () => void }).unref?.();
  }
  ref(): void {
    (this.vmm as { ref?: () => void }).ref?.();
  }
  kill(reason: Error): void {
    void this.stop(reason);
  }
  exited$(): Promise<void> {
    return this.stopping ?? this.vmm.exited.then(() => undefined);
  }
}

const DIR_PREFIX = "agentbox-vm-";
let swept = false;

/** A VM's private directory, marked with its owner; the first one of a process sweeps. */
function privateDir(): string {
  if (!swept) {
    swept = true;
    sweepStaleVms();
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), DIR_PREFIX));
  markOwner(dir);
  return dir;
}

/**
 * Remove what VMs of dead agentbox processes left (a host killed with SIGKILL cannot clean up):
 * any VMM still in their cgroups is killed, then the cgroups and directories go. The count.
 */
export function sweepStaleVms(): number {
  let n = 0;
  for (const dir of staleDirs(DIR_PREFIX)) {
    const cg = HostCgroup.forName(CGROUP_PARENT, path.basename(dir)); // the cgroup is named after the directory
    cg?.killAll();
    // The kernel lets go of a cgroup a moment after its last process (up to ~1 s here).
    let removed = !cg || cg.remove();
    for (let i = 0; i < 50 && !removed; i++) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      removed = cg!.remove();
    }
    if (!removed) continue; // the next sweep tries again
    fs.rmSync(dir, { recursive: true, force: true });
    n++;
  }
  return n;
}


/** An empty ext4 of `sizeMb` (sparse; no journal: the disk never outlives its VM). */
async function makeScratchDisk(file: string, sizeMb: number): Promise<void> {
  const r = await run("mke2fs", ["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0", "-L", "scratch", file, `${sizeMb}M`]);
  if (r) throw new WorkerCrashedError(`cannot make the VM's scratch disk (mke2fs, from e2fsprogs): ${r}`);
}

/** Copy a disk image keeping its holes (a reflink where the file system has them). */
async function copySparse(from: string, to: string): Promise<void> {
  const r = await run("cp", ["--sparse=always", "--reflink=auto", from, to]);
  if (r) throw new WorkerCrashedError(`cannot copy ${path.basename(from)}: ${r}`);
}

/** Run a host tool; resolves to its error output when it fails, "" when it succeeds. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, timeout: 60_000 }, (err, _out, stderr) => resolve(err ? (String(stderr).trim() || err.message).slice(-500) : ""));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
