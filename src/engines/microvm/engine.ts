// The heavy tier on a microVM: a MicroVm as a HeavyBackend of the one heavy engine
// (heavy/engine.ts). Each sandbox is a VM restored from the base snapshot (booted once per spec),
// refreshed with its own entropy and clock before its agent is configured. Out of guest RAM, the guest's own OOM killer ends the
// greedy process and the VM lives on; a cgroup OOM of the VMM ends the sandbox with MemoryLimitError.
// `snapshot()` saves the live VM (it keeps running); each restore is an independent VM.
import type { NetworkGrant } from "../../policy/network.js";
import type { SecretSet } from "../../policy/secrets.js";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { z } from "zod";
import { SavedStateError, TierUnavailableError, WorkerCrashedError } from "../../errors.js";
import type { EngineSnapshot } from "../engine.js";
import { moveInto, savedDir } from "../saved-files.js";
import type { HeavyLimits as Limits } from "../../policy/options.js";
import type { AgentRequest } from "../../protocol/agent.js";
import type { OutputListener } from "../heavy/agent-client.js";
import type { AgentFinal } from "../heavy/agent-session.js";
import type { AgentConfigExtras, HeavyBackend, HeavySavedState } from "../heavy/backend.js";
import { HeavyEngine, heavySnapshot } from "../heavy/engine.js";
import { poolFor } from "../pools.js";
import { detectAccel, type AccelChoice } from "./accel.js";
import { buildMicrovmArtefacts, findMicrovmArtefacts, requireMicrovmArtefacts } from "./artefacts.js";
import { duBytes, findImage } from "../heavy/image.js";
import type { Accel, Hypervisor, SavedState, VmSpec } from "./hypervisor.js";
import { QemuHypervisor } from "./qemu.js";
import { baseRamMode, baseSnapshot, dropBaseSnapshot } from "./snapshots.js";
import { MicroVm } from "./vm.js";

export interface MicrovmEngineConfig {
  limits: Limits;
  env: Record<string, string>;
  /** Seeds Python's `random` in runCode. */
  seed: number | null;
  /** Extra Debian packages: selects the image (and artefacts) built with them. */
  packages: string[];
  /** Egress through the host's proxy (heavy/egress.ts), limited by this grant. Default: none. */
  network?: NetworkGrant | undefined;
  /** The grant's secrets (placeholders for the guest's env, values for the proxy alone). */
  secrets?: SecretSet | undefined;
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
  const why = hypervisor.unavailableReason();
  if (why) throw new TierUnavailableError(why);
  // With the image built, the kernel and disk are made on first use (seconds; cached after).
  const artefacts = findMicrovmArtefacts(config.packages) ?? (findImage(config.packages) ? await buildMicrovmArtefacts({ packages: config.packages }) : requireMicrovmArtefacts(config.packages));
  const accel = await detectAccel(hypervisor, artefacts);
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

/** What a microVM sandbox reports to tests and leak checks. */
export interface MicrovmResources {
  dir: string;
  cgroupDirs: string[];
  pid: number | undefined;
}

/** The heavy engine on a microVM. */
export type MicrovmEngine = HeavyEngine<MicrovmResources>;

export const MicrovmEngine = {
  /** Take a ready VM from the pool when there is one, else restore one; then configure it. */
  async start(config: MicrovmEngineConfig, pooled: boolean): Promise<MicrovmEngine> {
    const { spec, accel } = await microvmSpec(config);
    if (accel.accel === "tcg" && !warnedTcg) {
      warnedTcg = true;
      process.emitWarning(`the microVM backend runs under software emulation (TCG), which is slow: ${accel.reason ?? "KVM unavailable"}`, { code: "AGENTBOX_MICROVM_TCG" });
    }
    const pool = pooled ? poolFor(specKey(spec), () => restoreBase(spec), "heavy") : undefined;
    const vm = pool?.take() ?? (await restoreBase(spec));
    return HeavyEngine.start(new MicrovmBackend(vm, accel), config);
  },
};

/** A MicroVm as a heavy backend: every VM is a clone (of the base snapshot or a saved VM). */
class MicrovmBackend implements HeavyBackend<MicrovmResources> {
  readonly info: MicrovmInfo;
  readonly noun = "VM";
  readonly cloned = true;
  /** The guest kernel's OOM killer and the VMM's cgroup enforce memory; the agent adds nothing. */
  readonly agentConfig: AgentConfigExtras = {};

  constructor(
    private readonly vm: MicroVm,
    private readonly accel: AccelChoice,
  ) {
    this.info = { backend: "microvm", hypervisor: hypervisor.name, accel: accel.accel };
    if (accel.reason) this.info.accelReason = accel.reason;
  }

  get client() {
    return this.vm.client;
  }

  get pid(): number | undefined {
    return this.vm.pid;
  }

  get resources(): MicrovmResources {
    return { dir: this.vm.dir, cgroupDirs: this.vm.process.cgroup?.existing() ?? [], pid: this.vm.pid };
  }

  get endedReason(): string | undefined {
    return this.vm.alive ? undefined : (this.vm.failure?.message ?? "the VM stopped");
  }

  get failure(): Error | undefined {
    return this.vm.failure;
  }

  get onDeath(): ((e: Error) => void) | undefined {
    return this.vm.onDeath;
  }

  set onDeath(f: ((e: Error) => void) | undefined) {
    this.vm.onDeath = f;
  }

  request(msg: AgentRequest, onOutput?: OutputListener): Promise<AgentFinal> {
    return this.vm.dispatch({ type: "request", msg, onOutput });
  }

  exited(): Promise<void> {
    return this.vm.exited$();
  }

  /** A restored VM gets its own entropy and the current clock before anything runs in it. */
  prepare(): Promise<void> {
    return this.vm.refresh();
  }

  /** Save the live VM (RAM streamed into the state file); it keeps running. */
  async checkpoint(): Promise<{ saved: HeavySavedState<MicrovmResources> }> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-vmsnap-"));
    try {
      await this.vm.dispatch({ type: "snapshot", into: { dir, ram: "streamed" }, then: "resume" });
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return { saved: new MicrovmSavedVm({ dir, ram: "streamed" }, this.vm.spec, this.accel) };
  }

  rssBytes(): number {
    return this.vm.process.rssBytes();
  }

  ref(): void {
    this.vm.ref();
  }

  dispose(reason: Error): Promise<void> {
    return this.vm.stop(reason);
  }
}

/** A saved VM on disk: its state directory and the VM it was taken of. */
const savedVmSchema = z.strictObject({
  kind: z.literal("microvm"),
  path: z.literal("vm"),
  ram: z.literal("streamed"),
  /** The kernel and root disk the VM ran: its state restores only onto the same ones. */
  artefacts: z.string().max(128),
  accel: z.enum(["kvm", "tcg"]),
  memoryMb: z.number().int().positive(),
  vcpus: z.number().int().positive(),
  diskMb: z.number().int().positive(),
});

/**
 * A microVM snapshot from what `persist` wrote into `dir`, for a sandbox of `config`: the
 * artefacts, accelerator and VM shape the options give here must be the saved VM's.
 */
export async function loadMicrovmSnapshot(config: MicrovmEngineConfig, saved: unknown, dir: string): Promise<EngineSnapshot> {
  const r = savedVmSchema.safeParse(saved);
  if (!r.success) throw new SavedStateError(`the saved microVM in ${dir} is not valid: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  const d = r.data;
  const { spec, accel } = await microvmSpec(config).catch((e: unknown) => {
    throw new SavedStateError(`the saved microVM in ${dir} needs the microVM artefacts ${d.artefacts}: ${(e as Error).message}`, { cause: e });
  });
  if (spec.artefacts.id !== d.artefacts) throw new SavedStateError(`the saved microVM in ${dir} ran the artefacts ${d.artefacts}; this host has ${spec.artefacts.id} for its options`);
  if (spec.accel !== d.accel || spec.memoryMb !== d.memoryMb || spec.vcpus !== d.vcpus || spec.diskMb !== d.diskMb) {
    throw new SavedStateError(`the saved microVM in ${dir} is a ${d.accel} VM of ${d.memoryMb} MB, ${d.vcpus} vCPUs, ${d.diskMb} MB of disk; here its options give ${spec.accel}, ${spec.memoryMb} MB, ${spec.vcpus} vCPUs, ${spec.diskMb} MB`);
  }
  return heavySnapshot(new MicrovmSavedVm({ dir: savedDir(dir, d.path), ram: d.ram }, spec, accel), config);
}

class MicrovmSavedVm implements HeavySavedState<MicrovmResources> {
  constructor(
    private state: SavedState,
    private readonly spec: VmSpec,
    private readonly accel: AccelChoice,
  ) {}

  async restore(): Promise<HeavyBackend<MicrovmResources>> {
    return new MicrovmBackend(await MicroVm.restore(hypervisor, this.spec, this.state), this.accel);
  }

  async remove(): Promise<void> {
    fs.rmSync(this.state.dir, { recursive: true, force: true });
  }

  sizeBytes(): number {
    return fs.existsSync(this.state.dir) ? duBytes(this.state.dir) : 0;
  }

  /** Move the VM's state directory into `into/vm` (loadMicrovmSnapshot reads it back). */
  async persist(into: string): Promise<z.input<typeof savedVmSchema>> {
    if (this.state.ram !== "streamed") throw new SavedStateError("a VM whose RAM is a shared file is not written to disk");
    const to = path.join(into, "vm");
    moveInto(this.state.dir, to);
    this.state = { ...this.state, dir: to };
    const { artefacts, accel, memoryMb, vcpus, diskMb } = this.spec;
    return { kind: "microvm", path: "vm", ram: "streamed", artefacts: artefacts.id, accel, memoryMb, vcpus, diskMb };
  }
}

export { baseRamMode };

/** For backend "auto": true when this image's microVM artefacts are built and KVM boots them. */
export async function microvmOnKvm(packages: string[]): Promise<boolean> {
  if (hypervisor.unavailableReason() || process.env.AGENTBOX_MICROVM_ACCEL === "tcg") return false;
  const artefacts = findMicrovmArtefacts(packages);
  if (!artefacts) return false;
  return (await detectAccel(hypervisor, artefacts)).accel === "kvm";
}
