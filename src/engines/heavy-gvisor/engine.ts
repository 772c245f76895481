// The heavy tier on gVisor: a GvisorBox as a HeavyBackend of the one heavy engine (heavy/engine.ts).
// The box supplies the agent channel (runsc's stdio), its death's name (MemoryLimitError when its
// cgroup ran out), disposal (`runsc kill` and delete, the cgroup, the state dir) and checkpoints:
// `runsc checkpoint` stops the container, so the backend carries on in a box restored from the
// image it just wrote, and every snapshot restore is another box restored from it.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { z } from "zod";
import { SavedStateError } from "../../errors.js";
import type { NetworkGrant } from "../../policy/network.js";
import type { SecretSet } from "../../policy/secrets.js";
import type { HeavyLimits as Limits } from "../../policy/options.js";
import type { AgentRequest } from "../../protocol/agent.js";
import type { EngineInfo } from "../engine.js";
import type { WorkerPool } from "../pool/pool.js";
import type { OutputListener } from "../heavy/agent-client.js";
import type { AgentFinal } from "../heavy/agent-session.js";
import type { AgentConfigExtras, HeavyBackend, HeavySavedState } from "../heavy/backend.js";
import { HeavyEngine, heavySnapshot } from "../heavy/engine.js";
import type { EngineSnapshot } from "../engine.js";
import { moveInto, savedDir } from "../saved-files.js";
import { duBytes, requireImage } from "../heavy/image.js";
import { GvisorBox, guestMemoryLimits, specKey, type BoxSpec } from "./box.js";

export interface GvisorEngineConfig {
  limits: Limits;
  env: Record<string, string>;
  /** Seeds Python's `random` in runCode (the heavy tier has no virtual clock or seeded kernel). */
  seed: number | null;
  /** Extra Debian packages: selects the image built with them. */
  packages: string[];
  /** Read-only host directories, bind-mounted under /home/user or /tmp (checked by the heavy option schema). */
  mounts?: { hostPath: string; guestPath: string }[];
  /** Egress through the host's proxy (heavy/egress.ts), limited by this grant. Default: none. */
  network?: NetworkGrant | undefined;
  /** The grant's secrets (placeholders for the guest's env, values for the proxy alone). */
  secrets?: SecretSet | undefined;
}

/** What a gVisor sandbox reports to tests and leak checks. */
export interface GvisorResources {
  containerId: string;
  dir: string;
  cgroupDirs: string[];
}

export function boxSpec(config: GvisorEngineConfig): BoxSpec {
  const { limits } = config;
  const spec: BoxSpec = { image: requireImage(config.packages), memoryMb: limits.memoryMb, cpus: limits.cpus, diskMb: limits.diskMb };
  if (config.mounts?.length) spec.mounts = config.mounts;
  return spec;
}

export { specKey };

/** The heavy engine on a gVisor box. */
export type GvisorEngine = HeavyEngine<GvisorResources>;

export const GvisorEngine = {
  /** Take a ready box from `pool` when there is one, else start one; then configure it. */
  async start(config: GvisorEngineConfig, pool: WorkerPool<GvisorBox> | undefined): Promise<GvisorEngine> {
    const box = pool?.take() ?? (await GvisorBox.start(boxSpec(config)));
    return HeavyEngine.start(new GvisorBackend(box, false), config);
  },
};

const INFO: EngineInfo = { backend: "gvisor" };

class GvisorBackend implements HeavyBackend<GvisorResources> {
  readonly info = INFO;
  readonly noun = "sandbox";
  readonly agentConfig: AgentConfigExtras;

  constructor(
    private readonly box: GvisorBox,
    readonly cloned: boolean,
  ) {
    this.agentConfig = guestMemoryLimits(box.spec.memoryMb);
  }

  get client() {
    return this.box.client;
  }

  get pid(): number | undefined {
    return this.box.pid;
  }

  get resources(): GvisorResources {
    return { containerId: this.box.containerId, dir: this.box.dir, cgroupDirs: this.box.cgroup.existing() };
  }

  get endedReason(): string | undefined {
    return this.box.alive ? undefined : (this.box.failure?.message ?? "the sandbox exited");
  }

  get failure(): Error | undefined {
    return this.box.failure;
  }

  get onDeath(): ((e: Error) => void) | undefined {
    return this.box.onDeath;
  }

  set onDeath(f: ((e: Error) => void) | undefined) {
    this.box.onDeath = f;
  }

  request(msg: AgentRequest, onOutput?: OutputListener): Promise<AgentFinal> {
    return this.box.client.request(msg, onOutput);
  }

  exited(): Promise<void> {
    return this.box.exited$();
  }

  /** Checkpoint the box (which stops its container) and carry on in a box restored from it. */
  async checkpoint(opts: { final?: boolean } = {}): Promise<{ saved: HeavySavedState<GvisorResources>; next?: HeavyBackend<GvisorResources> }> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-snapshot-"));
    try {
      await this.box.checkpoint(dir);
      // A pause ends the sandbox anyway: no successor to restore (the checkpoint stopped this one).
      if (opts.final) return { saved: new GvisorCheckpoint(dir, this.box.spec) };
      const next = new GvisorBackend(await GvisorBox.restore(this.box.spec, dir), true);
      return { saved: new GvisorCheckpoint(dir, this.box.spec), next };
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  ref(): void {
    this.box.ref();
  }

  dispose(reason: Error): Promise<void> {
    return this.box.dispose(reason);
  }
}

/** A checkpoint on disk: the `runsc checkpoint` image directory and the box it was taken of. */
const savedCheckpointSchema = z.strictObject({
  kind: z.literal("gvisor-checkpoint"),
  path: z.literal("checkpoint"),
  /** The image the container ran: a checkpoint restores only into the same root file system. */
  image: z.strictObject({ id: z.string().max(128), createdAt: z.string().max(64) }),
  memoryMb: z.number().int().positive(),
  cpus: z.number().positive(),
  diskMb: z.number().int().positive(),
});

/**
 * A gVisor snapshot from what `persist` wrote into `dir`, for a sandbox of `config` (its options
 * as saved): the image must be the one the checkpoint was taken in, built here, and the box's
 * shape (memory, cpus, disk) must match the options, or the load fails naming what differs.
 */
export function loadGvisorSnapshot(config: GvisorEngineConfig, saved: unknown, dir: string): EngineSnapshot {
  const r = savedCheckpointSchema.safeParse(saved);
  if (!r.success) throw new SavedStateError(`the saved gVisor checkpoint in ${dir} is not valid: ${r.error.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  const d = r.data;
  let spec: BoxSpec;
  try {
    spec = boxSpec(config);
  } catch (e) {
    throw new SavedStateError(`the saved gVisor checkpoint in ${dir} needs the heavy-tier image ${d.image.id}: ${(e as Error).message}`, { cause: e });
  }
  if (spec.image.id !== d.image.id || spec.image.createdAt !== d.image.createdAt) {
    throw new SavedStateError(`the saved gVisor checkpoint in ${dir} was taken in the image ${d.image.id} built at ${d.image.createdAt}; this host has ${spec.image.id} built at ${spec.image.createdAt} (a checkpoint restores only into the root file system it was taken in)`);
  }
  if (spec.memoryMb !== d.memoryMb || spec.cpus !== d.cpus || spec.diskMb !== d.diskMb) {
    throw new SavedStateError(`the saved gVisor checkpoint in ${dir} is of a box of ${d.memoryMb} MB, ${d.cpus} cpus, ${d.diskMb} MB of disk, which its saved options do not describe`);
  }
  return heavySnapshot(new GvisorCheckpoint(savedDir(dir, d.path), spec), config);
}

class GvisorCheckpoint implements HeavySavedState<GvisorResources> {
  constructor(
    private dir: string,
    private readonly spec: BoxSpec,
  ) {}

  /** Move the checkpoint image into `into/checkpoint` (loadGvisorSnapshot reads it back). */
  async persist(into: string): Promise<z.input<typeof savedCheckpointSchema>> {
    const { image, memoryMb, cpus, diskMb } = this.spec;
    if (this.spec.agentArgv) throw new SavedStateError("a box with a replaced agent (a test's) is not written to disk");
    moveInto(this.dir, path.join(into, "checkpoint"));
    this.dir = path.join(into, "checkpoint");
    return { kind: "gvisor-checkpoint", path: "checkpoint", image: { id: image.id, createdAt: image.createdAt }, memoryMb, cpus, diskMb };
  }

  async restore(): Promise<HeavyBackend<GvisorResources>> {
    return new GvisorBackend(await GvisorBox.restore(this.spec, this.dir), true);
  }

  async remove(): Promise<void> {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  sizeBytes(): number {
    return fs.existsSync(this.dir) ? duBytes(this.dir) : 0;
  }
}
