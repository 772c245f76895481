// The hypervisor seam of the microVM backend: what the VM controller needs from a VMM (launch a
// VM from boot artefacts or from a saved state, pause, save, resume, kill), and what only the VMM
// knows: whether it can run here, whether KVM boots our kernel under it (a probe), and what a
// saved state depends on besides the spec (its version, machine type and argv), which is part of
// the base snapshots' cache key. QEMU `-M microvm` implements it (qemu.ts); Firecracker would be a
// second implementation of the same interface. Everything generic (caching the accelerator
// answer, building and keying base snapshots, the VM state machine) is written against this.
import type { Duplex } from "node:stream";
import type { MicrovmArtefacts } from "./artefacts.js";

export type Accel = "kvm" | "tcg";

/** The accelerator a VM runs under, and why not KVM when it is not. */
export interface AccelChoice {
  accel: Accel;
  /** Why KVM is not used (absent, not accessible, or the probe boot failed). */
  reason?: string;
}

/** How a snapshot holds guest RAM: inside the state stream, or in a file mapped copy-on-write. */
export type RamMode = "streamed" | "shared";

/** What shapes a VM; VMs with equal specs can restore each other's snapshots. */
export interface VmSpec {
  artefacts: MicrovmArtefacts;
  accel: Accel;
  /** Guest RAM (`-m`), MiB. */
  memoryMb: number;
  /** Virtual CPUs. */
  vcpus: number;
  /** CPU time per wall-clock time for the VMM process (cgroup quota). */
  cpus: number;
  /** Size of the guest's scratch disk (/tmp and /home/user together), MiB. */
  diskMb: number;
}

/**
 * The VM's writable disk in its private directory (and in a saved state's directory): ext4 of
 * `diskMb`, made by the host, laid out by the guest's first boot, copied with every saved state.
 */
export const SCRATCH_DISK = "scratch.img";

/** A saved VM: the VMM's state stream (and the RAM file in "shared" mode). */
export interface SavedState {
  /** Directory holding `state.bin`, the scratch disk (and `ram.bin` in shared mode). */
  dir: string;
  ram: RamMode;
}

export interface LaunchOptions {
  spec: VmSpec;
  /** A private directory for sockets, logs and the scratch disk (SCRATCH_DISK, made by the caller); the caller removes it. */
  dir: string;
  /** Restore from this state instead of booting. */
  restore?: SavedState | undefined;
  /** Back guest RAM by a shared file in `dir` (so a later save can leave RAM out of the stream). */
  sharedRamFile?: string | undefined;
}

/** Why a VMM process ended. */
export interface VmExit {
  code: number | null;
  signal: string | null;
  /** The VMM's last word on the guest (QMP SHUTDOWN reason), e.g. "guest-reset", "guest-panic". */
  guestReason: string | undefined;
  /** Tails of the guest console and the VMM's stderr, for error messages (never for control). */
  console: string;
  stderr: string;
}

export interface VmProcess {
  readonly pid: number | undefined;
  /** Byte streams to the guest agent and to the guest supervisor's control port. */
  readonly agent: Duplex;
  readonly control: Duplex;
  /** Resolves when the VMM process has ended. */
  readonly exited: Promise<VmExit>;
  readonly hasExited: boolean;
  /** Start the vCPUs of a restored (paused) VM. */
  resume(): Promise<void>;
  /** Pause the VM and write its state into `into` (RAM left out when `ram` is "shared"). */
  save(into: SavedState): Promise<void>;
  /** Resident memory of the VMM process, bytes (0 when unknown). */
  rssBytes(): number;
  /** The host cgroup holding the VMM, when it has one (its OOM count names a VMM killed for memory). */
  readonly cgroup?: { oomKills(): number; existing(): string[] } | undefined;
  /** End the VMM and release what it holds (cgroup). Idempotent. */
  kill(): Promise<VmExit>;
}

export interface Hypervisor {
  readonly name: string;
  /** Why this VMM cannot run on this host (not installed, wrong platform), or undefined. */
  unavailableReason(): string | undefined;
  /** Start a VM; resolves once the VMM runs and its channels are connected. */
  launch(opts: LaunchOptions): Promise<VmProcess>;
  /**
   * Whether KVM runs these artefacts' kernel under this VMM (`/dev/kvm` is known to be usable):
   * a probe boot. Its answer is cached (accel.ts) under `probeIdentity`.
   */
  probeKvm(artefacts: MicrovmArtefacts): Promise<AccelChoice>;
  /** What the probe's answer depends on besides the host kernel: the VMM build, the guest kernel. */
  probeIdentity(artefacts: MicrovmArtefacts): string;
  /**
   * What a state saved from a VM of `spec` depends on besides the spec itself (VMM version,
   * machine type, device layout, kernel command line): a saved state restores only into a VM with
   * the same identity. Part of the base snapshots' cache key (snapshots.ts).
   */
  stateIdentity(spec: VmSpec, ram: RamMode): string;
}
