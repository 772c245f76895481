// The base snapshot every microVM sandbox starts from: one VM per spec (image, accelerator,
// RAM, vCPUs, scratch size) is booted once to an idle, ready agent with a warm Python REPL, saved,
// and stopped. It is kept in the user's cache directory, so later processes skip the boot too.
// Built in a temporary directory and renamed into place: readers never see half a snapshot.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { WorkerCrashedError } from "../../errors.js";
import { microvmDir } from "./artefacts.js";
import type { Hypervisor, RamMode, SavedState, VmSpec } from "./hypervisor.js";
import { MicroVm } from "./vm.js";

/** Changes whenever what a base snapshot holds changes. */
const SNAPSHOT_VERSION = 2; // 2: the scratch disk (scratch.img) beside the state
const building = new Map<string, Promise<SavedState>>();

/**
 * How base snapshots hold guest RAM. "shared": a file the restored VM maps copy-on-write, so
 * only device state is read at restore and clones share unchanged pages (measured faster here,
 * see bench/microvm.ts); "streamed": RAM inside the state stream.
 */
export function baseRamMode(): RamMode {
  return process.env.AGENTBOX_MICROVM_RAM === "streamed" ? "streamed" : "shared";
}

export function snapshotsDir(): string {
  return path.join(microvmDir(), "snapshots");
}

/** The cache key of a base snapshot: the spec, the RAM mode, and what the hypervisor says a saved state depends on. */
export function baseSnapshotKey(hv: Hypervisor, spec: VmSpec, ram: RamMode): string {
  return createHash("sha256")
    .update(JSON.stringify({ v: SNAPSHOT_VERSION, a: spec.artefacts.id, accel: spec.accel, m: spec.memoryMb, c: spec.vcpus, d: spec.diskMb, ram, hv: [hv.name, hv.stateIdentity(spec, ram)] }))
    .digest("hex")
    .slice(0, 16);
}

/** The saved base state for `spec`, booting and saving a VM the first time. */
export function baseSnapshot(hv: Hypervisor, spec: VmSpec, ram: RamMode = baseRamMode()): Promise<SavedState> {
  const key = baseSnapshotKey(hv, spec, ram);
  const dir = path.join(snapshotsDir(), key);
  if (fs.existsSync(path.join(dir, "meta.json"))) return Promise.resolve({ dir, ram });
  let p = building.get(key);
  if (!p) {
    p = build(hv, spec, ram, dir).finally(() => building.delete(key));
    building.set(key, p);
  }
  return p;
}

/** Forget a base snapshot (e.g. one that failed to restore); the next start builds it again. */
export function dropBaseSnapshot(state: SavedState): void {
  const trash = `${state.dir}.trash-${randomBytes(4).toString("hex")}`;
  try {
    fs.renameSync(state.dir, trash);
    fs.rmSync(trash, { recursive: true, force: true });
  } catch {
    // already gone
  }
}

async function build(hv: Hypervisor, spec: VmSpec, ram: RamMode, dir: string): Promise<SavedState> {
  fs.mkdirSync(snapshotsDir(), { recursive: true });
  const tmp = `${dir}.tmp-${randomBytes(4).toString("hex")}`;
  fs.mkdirSync(tmp);
  const t0 = performance.now();
  try {
    const vm = await MicroVm.boot(hv, spec, { sharedRam: ram === "shared" });
    const bootMs = performance.now() - t0;
    try {
      // Warm what the first requests of every sandbox use: the REPL and a subprocess.
      const warm = await vm.dispatch({ type: "request", msg: { type: "run", id: vm.client.newId(), code: "1", valueCap: 16 } });
      if (warm.type !== "result" || warm.value !== "1") throw new WorkerCrashedError(`the guest's Python REPL did not answer while warming up: ${JSON.stringify(warm).slice(0, 1000)}`);
      await vm.dispatch({ type: "request", msg: { type: "exec", id: vm.client.newId(), argv: ["true"] } });
      await vm.dispatch({ type: "snapshot", into: { dir: tmp, ram }, then: "stop" });
    } finally {
      await vm.stop(new WorkerCrashedError("base snapshot taken"));
    }
    fs.writeFileSync(path.join(tmp, "meta.json"), JSON.stringify({ ram, spec: { ...spec, artefacts: spec.artefacts.id }, bootMs, createdAt: new Date().toISOString() }, null, 2) + "\n");
    try {
      fs.renameSync(tmp, dir);
    } catch {
      fs.rmSync(tmp, { recursive: true, force: true }); // another process got there first
    }
    return { dir, ram };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
