// The heavy tier on a microVM, host side: each sandbox is a VM restored from the base snapshot
// (booted once per spec), refreshed with its own entropy and clock, and driven through the same
// guest agent and protocol as the gVisor backend (commands, runCode and files: the shared
// AgentSession, heavy/agent-session.ts). Out of guest RAM, the guest's own OOM killer ends the
// greedy process and the VM lives on; a cgroup OOM of the VMM ends the sandbox with MemoryLimitError.
// `snapshot()` saves the live VM (it keeps running); each restore is an independent VM.
import { randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SnapshotRemovedError, WorkerCrashedError } from "../../errors.js";
import type { HeavyLimits as Limits } from "../../policy/options.js";
import type { AgentRequest } from "../../protocol/agent.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { Engine, EngineExecOptions, EngineExecResult, EngineRunOptions, EngineRunResult, EngineSnapshot } from "../engine.js";
import type { OutputListener } from "../heavy/agent-client.js";
import { AgentSession } from "../heavy/agent-session.js";
import { poolFor } from "../pools.js";
import { detectAccel, type AccelChoice } from "./accel.js";
import { buildMicrovmArtefacts, findMicrovmArtefacts, requireMicrovmArtefacts } from "./artefacts.js";
import { findImage } from "../heavy/image.js";
import type { Accel, Hypervisor, SavedState, VmSpec } from "./hypervisor.js";
import { QemuHypervisor, qemuBinary, qemuUnavailableReason } from "./qemu.js";
import { baseRamMode, baseSnapshot, dropBaseSnapshot } from "./snapshots.js";
import { MicroVm } from "./vm.js";

export interface MicrovmEngineConfig {
  limits: Limits;
  env: Record<string, string>;
  /** Seeds Python's `random` in runCode. */
  seed: number | null;
  /** Extra Debian packages: selects the image (and artefacts) built with them. */
  packages: string[];
}

/** What the sandbox reports about its backend. */
export interface MicrovmInfo {
  backend: "microvm";
  hypervisor: string;
  accel: Accel;
  /** Why KVM is not used, when it is not. */
  accelReason?: string;
}

const hypervisor: Hypervisor = new QemuHypervisor();
let warnedTcg = false;

/** The VM spec for a sandbox's limits (finds the artefacts, detects the accelerator). */
export async function microvmSpec(config: Pick<MicrovmEngineConfig, "limits" | "packages">): Promise<{ spec: VmSpec; accel: AccelChoice }> {
  qemuBinary();
  // With the image built, the kernel and disk are made on first use (seconds; cached after).
  const artefacts = findMicrovmArtefacts(config.packages) ?? (findImage(config.packages) ? await buildMicrovmArtefacts({ packages: config.packages }) : requireMicrovmArtefacts(config.packages));
  const accel = await detectAccel(artefacts);
  const { limits } = config;
  const vcpus = Math.max(1, Math.min(Math.ceil(limits.cpus), os.availableParallelism()));
  return { spec: { artefacts, accel: accel.accel, memoryMb: limits.memoryMb, vcpus, cpus: limits.cpus, diskMb: limits.diskMb }, accel };
}

function specKey(spec: VmSpec): string {
  return `microvm:${spec.artefacts.id}:${spec.accel}:${spec.memoryMb}:${spec.vcpus}:${spec.cpus}:${spec.diskMb}`;
}

/** Restore a VM from the spec's base snapshot (built on first use); a broken snapshot is rebuilt once. */
async function restoreBase(spec: VmSpec): Promise<MicroVm> {
  const base = await baseSnapshot(hypervisor, spec);
  try {
    return await MicroVm.restore(hypervisor, spec, base);
  } catch (e) {
    if (!(e instanceof WorkerCrashedError) || !/restor/i.test(e.message)) throw e;
    dropBaseSnapshot(base);
    return MicroVm.restore(hypervisor, spec, await baseSnapshot(hypervisor, spec));
  }
}

export class MicrovmEngine implements Engine {
  private closed: string | undefined;
  private readonly session: AgentSession;

  private constructor(
    private readonly vm: MicroVm,
    private readonly config: MicrovmEngineConfig,
    readonly info: MicrovmInfo,
  ) {
    this.session = new AgentSession({ client: vm.client, call: (m, o) => this.call(m, o), fail: (e) => this.fail(e) }, config.limits, "VM");
    vm.onDeath = (e) => {
      this.closed ??= e.message;
    };
  }

  /** Take a ready VM from the pool when there is one, else restore one; then configure it. */
  static async start(config: MicrovmEngineConfig, pooled: boolean): Promise<MicrovmEngine> {
    const { spec, accel } = await microvmSpec(config);
    if (accel.accel === "tcg" && !warnedTcg) {
      warnedTcg = true;
      process.emitWarning(`the microVM backend runs under software emulation (TCG), which is slow: ${accel.reason ?? "KVM unavailable"}`, { code: "AGENTBOX_MICROVM_TCG" });
    }
    const pool = pooled ? poolFor(specKey(spec), () => restoreBase(spec), "heavy") : undefined;
    const vm = pool?.take() ?? (await restoreBase(spec));
    return MicrovmEngine.adopt(vm, config, accel);
  }

  /** Refresh a restored VM's entropy and clock, configure it for this sandbox, and wrap it. @internal */
  static async adopt(vm: MicroVm, config: MicrovmEngineConfig, accel: AccelChoice): Promise<MicrovmEngine> {
    vm.ref();
    const info: MicrovmInfo = { backend: "microvm", hypervisor: hypervisor.name, accel: accel.accel };
    if (accel.reason) info.accelReason = accel.reason;
    const engine = new MicrovmEngine(vm, config, info);
    try {
      await vm.refresh();
      // Clones must not share the REPL's random state either.
      const seed = config.seed ?? randomInt(0, 2 ** 48 - 1);
      await engine.call({ type: "configure", id: vm.client.newId(), env: config.env, seed });
    } catch (e) {
      await engine.dispose("start failed");
      throw e;
    }
    return engine;
  }

  get closedReason(): string | undefined {
    return this.closed ?? (this.vm.alive ? undefined : (this.vm.failure?.message ?? "the VM stopped"));
  }

  get pid(): number | undefined {
    return this.vm.pid;
  }

  /** The VM's private directory and cgroup directories (for tests that check nothing is left). */
  get resources(): { dir: string; cgroupDirs: string[]; pid: number | undefined } {
    const cg = (this.vm.process as { cgroup?: { existing(): string[] } }).cgroup;
    return { dir: this.vm.dir, cgroupDirs: cg?.existing() ?? [], pid: this.vm.pid };
  }

  /** The VMM process's resident memory, bytes. */
  rssBytes(): number {
    return this.vm.process.rssBytes();
  }

  exec(argv: string[], opts: EngineExecOptions): Promise<EngineExecResult> {
    return this.session.exec(argv, opts);
  }

  run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    return this.session.run(code, opts);
  }

  writeFile(p: string, data: Uint8Array): Promise<void> {
    return this.session.writeFile(p, data);
  }

  readFile(p: string): Promise<Uint8Array> {
    return this.session.readFile(p);
  }

  list(p: string): Promise<DirEntry[]> {
    return this.session.list(p);
  }

  remove(p: string): Promise<void> {
    return this.session.remove(p);
  }

  exists(p: string): Promise<boolean> {
    return this.session.exists(p);
  }

  makeDir(p: string): Promise<void> {
    return this.session.makeDir(p);
  }

  /** Save the live VM (RAM streamed into the state file); the sandbox keeps running. */
  async snapshot(): Promise<EngineSnapshot> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-vmsnap-"));
    try {
      await this.vm.dispatch({ type: "snapshot", into: { dir, ram: "streamed" }, then: "resume" });
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      this.closed ??= `snapshot failed: ${(e as Error).message}`;
      throw e;
    }
    return new MicrovmSnapshot({ dir, ram: "streamed" }, this.vm.spec, this.config, { accel: this.info.accel, ...(this.info.accelReason ? { reason: this.info.accelReason } : {}) });
  }

  async dispose(reason = "killed"): Promise<void> {
    this.closed ??= reason;
    await this.vm.stop(new WorkerCrashedError(`sandbox closed: ${reason}`));
  }

  /** End the VM because it stopped answering; pending requests fail with `err`. */
  private async fail(err: Error): Promise<void> {
    this.closed ??= err.message;
    this.vm.client.fail(err);
    await this.vm.stop(err);
  }

  /** A request whose failure, when the VM died, reports why it died (e.g. MemoryLimitError). */
  private async call(msg: AgentRequest, onOutput?: OutputListener) {
    try {
      return await this.vm.dispatch({ type: "request", msg, onOutput });
    } catch (e) {
      if (!this.vm.failure) await Promise.race([this.vm.exited$(), new Promise((r) => setTimeout(r, 1500))]);
      const why = this.vm.failure ?? (e as Error);
      this.closed ??= why.message;
      void this.vm.stop(why);
      throw why;
    }
  }
}

class MicrovmSnapshot implements EngineSnapshot {
  private removed = false;
  constructor(
    private readonly state: SavedState,
    private readonly spec: VmSpec,
    private readonly config: MicrovmEngineConfig,
    private readonly accel: AccelChoice,
  ) {}

  async restore(): Promise<Engine> {
    if (this.removed) throw new SnapshotRemovedError();
    const vm = await MicroVm.restore(hypervisor, this.spec, this.state);
    return MicrovmEngine.adopt(vm, { ...this.config, seed: null }, this.accel);
  }

  async remove(): Promise<void> {
    this.removed = true;
    fs.rmSync(this.state.dir, { recursive: true, force: true });
  }
}

export { baseRamMode };

/** For backend "auto": true when this image's microVM artefacts are built and KVM boots them. */
export async function microvmOnKvm(packages: string[]): Promise<boolean> {
  if (qemuUnavailableReason() || process.env.AGENTBOX_MICROVM_ACCEL === "tcg") return false;
  const artefacts = findMicrovmArtefacts(packages);
  if (!artefacts) return false;
  return (await detectAccel(artefacts)).accel === "kvm";
}
