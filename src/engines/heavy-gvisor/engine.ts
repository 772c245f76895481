// The heavy tier on gVisor, host side: drives one GvisorBox through its guest agent (commands,
// runCode and files: the shared AgentSession, heavy/agent-session.ts). Commands
// and runCode get host-enforced wall-clock limits (interrupt or kill in the guest first, `runsc
// kill` of the whole sandbox when the guest does not answer) and output caps; a cgroup OOM ends
// the sandbox with MemoryLimitError. Snapshots are `runsc checkpoint` images, restorable many times.
import { randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SnapshotRemovedError, WorkerCrashedError } from "../../errors.js";
import type { HeavyLimits as Limits } from "../../policy/options.js";
import type { AgentRequest } from "../../protocol/agent.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { Engine, EngineExecOptions, EngineExecResult, EngineRunOptions, EngineRunResult, EngineSnapshot } from "../engine.js";
import type { WorkerPool } from "../pool/pool.js";
import { AgentSession } from "../heavy/agent-session.js";
import { requireImage } from "../heavy/image.js";
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
}

export function boxSpec(config: GvisorEngineConfig): BoxSpec {
  const { limits } = config;
  const spec: BoxSpec = { image: requireImage(config.packages), memoryMb: limits.memoryMb, cpus: limits.cpus, diskMb: limits.diskMb };
  if (config.mounts?.length) spec.mounts = config.mounts;
  return spec;
}

export { specKey };

export class GvisorEngine implements Engine {
  private closed: string | undefined;
  private readonly session: AgentSession;

  private constructor(
    private box: GvisorBox,
    private readonly config: GvisorEngineConfig,
  ) {
    const live = () => this.box; // snapshot() swaps the box
    this.session = new AgentSession({ get client() { return live().client; }, call: (m, o) => this.call(m, o), fail: (e) => this.fail(e) }, config.limits, "sandbox");
    box.onDeath = (e) => {
      this.closed ??= e.message;
    };
  }

  /** Take a ready box from `pool` when there is one, else start one; then configure it. */
  static async start(config: GvisorEngineConfig, pool: WorkerPool<GvisorBox> | undefined): Promise<GvisorEngine> {
    const spec = boxSpec(config);
    const box = pool?.take() ?? (await GvisorBox.start(spec));
    return GvisorEngine.adopt(box, config);
  }

  /** Configure a started box for this sandbox and wrap it. @internal */
  static async adopt(box: GvisorBox, config: GvisorEngineConfig): Promise<GvisorEngine> {
    box.ref();
    const engine = new GvisorEngine(box, config);
    try {
      await engine.configure(config.seed);
    } catch (e) {
      await engine.dispose("start failed");
      throw e;
    }
    return engine;
  }

  private async configure(seed: number | null): Promise<void> {
    const c = this.box.client;
    await this.call({ type: "configure", id: c.newId(), env: this.config.env, seed, ...guestMemoryLimits(this.config.limits.memoryMb) });
  }

  get closedReason(): string | undefined {
    return this.closed ?? (this.box.alive ? undefined : (this.box.failure?.message ?? "the sandbox exited"));
  }

  get pid(): number | undefined {
    return this.box.pid;
  }

  /** The container id and private directory (for tests that check nothing is left behind). */
  get resources(): { containerId: string; dir: string; cgroupDirs: string[] } {
    return { containerId: this.box.containerId, dir: this.box.dir, cgroupDirs: this.box.cgroup.existing() };
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

  /** Checkpoint the sandbox and carry on from the checkpoint (gVisor stops a checkpointed container). */
  async snapshot(): Promise<EngineSnapshot> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-snapshot-"));
    const old = this.box;
    try {
      await old.checkpoint(dir);
      this.box = await GvisorBox.restore(old.spec, dir);
      this.box.onDeath = (e) => {
        this.closed ??= e.message;
      };
    } catch (e) {
      this.closed ??= `snapshot failed: ${(e as Error).message}`;
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    return new GvisorSnapshot(dir, old.spec, this.config);
  }

  async dispose(reason = "killed"): Promise<void> {
    this.closed ??= reason;
    await this.box.dispose(new WorkerCrashedError(`sandbox closed: ${reason}`));
  }

  /** End the sandbox because it stopped answering; pending requests fail with `err`. */
  private async fail(err: Error): Promise<void> {
    this.closed ??= err.message;
    this.box.client.fail(err);
    await this.box.dispose(err);
  }

  /** A request whose failure, when the box died, reports why it died (e.g. MemoryLimitError). */
  private async call(msg: AgentRequest, onOutput?: (s: "stdout" | "stderr", d: Buffer) => void) {
    const box = this.box;
    try {
      return await box.client.request(msg, onOutput);
    } catch (e) {
      // Wait for the death's cause (OOM count) before reporting.
      if (!box.failure) await Promise.race([box.exited$(), new Promise((r) => setTimeout(r, 1500))]);
      const why = box.failure ?? (e as Error);
      this.closed ??= why.message;
      void box.dispose(why);
      throw why;
    }
  }
}

class GvisorSnapshot implements EngineSnapshot {
  private removed = false;
  constructor(
    private readonly dir: string,
    private readonly spec: BoxSpec,
    private readonly config: GvisorEngineConfig,
  ) {}

  async restore(): Promise<Engine> {
    if (this.removed) throw new SnapshotRemovedError();
    const box = await GvisorBox.restore(this.spec, this.dir);
    // Clones must not share the REPL's random state.
    const seed = this.config.seed ?? randomInt(0, 2 ** 48 - 1);
    return GvisorEngine.adopt(box, { ...this.config, seed });
  }

  async remove(): Promise<void> {
    this.removed = true;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
