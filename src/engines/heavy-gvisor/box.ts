// One running gVisor sandbox: its OCI bundle and runsc state in a private temp directory, its
// cgroup, the `runsc run` (or `runsc restore`) process whose stdio is the guest agent's channel,
// and the end of all of them. A box is what the pool keeps ready; the engine drives one.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { MemoryLimitError, TierUnavailableError, WorkerCrashedError } from "../../errors.js";
import { AgentClient } from "../heavy/agent-client.js";
import { AGENT_GUEST_PATH, type ImageInfo } from "../heavy/image.js";
import { HostCgroup } from "../heavy/cgroups.js";
import { GUEST_MAX_PROCESSES } from "../heavy/guest-limits.js";
import { writeOciBundle, type OciBundle } from "../heavy/oci.js";
import { markOwner, staleDirs } from "../heavy/stale.js";

const MiB = 1024 * 1024;
const STDERR_KEEP = 8 * 1024;
export { GUEST_MAX_PROCESSES };
const GUEST_UID = 1000;
const START_TIMEOUT_MS = 30_000;

/** What an idle sandbox holds of its memory (gVisor's sentry, the agent, a REPL), MiB (~28 measured), with room to spare. */
const SANDBOX_BASE_MB = 40;

/**
 * The memory limits the guest agent enforces inside a sandbox (limits.memoryMb): RLIMIT_AS of each
 * guest process (one greedy process gets ENOMEM, Python a MemoryError, beside the sandbox's base),
 * and the sandbox memory use past which the agent SIGKILLs the largest guest process (several
 * greedy ones). The guest sees ~10 MB less than its cgroup charges.
 */
export function guestMemoryLimits(memoryMb: number): { processMemoryMb: number; watchdogMemoryMb: number } {
  const watchdogMemoryMb = memoryMb - 8;
  return { processMemoryMb: Math.max(32, memoryMb - SANDBOX_BASE_MB), watchdogMemoryMb };
}

/**
 * The host cgroup, the outer wall, sits above limits.memoryMb: what fast-growing processes add
 * between two polls of the agent's watchdog (~20 MB per 10 ms measured on 2 busy cores, several
 * polls when the cores are shared) must not reach it. Like the microVM's VMM cgroup above its RAM.
 */
export function cgroupMemoryMb(memoryMb: number): number {
  return memoryMb + Math.max(64, Math.ceil(memoryMb / 4));
}

/** What shapes a box at start-up; boxes with equal specs are interchangeable (pool key). */
export interface BoxSpec {
  image: ImageInfo;
  memoryMb: number;
  cpus: number;
  diskMb: number;
  /** Replaces the agent's command line (tests: a hostile guest on the channel). */
  agentArgv?: string[];
  /** Host directories bind-mounted read-only (real host paths; guest paths under the tmpfs scratch). */
  mounts?: { hostPath: string; guestPath: string }[];
}

export function specKey(s: BoxSpec): string {
  return `gvisor:${s.image.id}:${s.memoryMb}:${s.cpus}:${s.diskMb}`;
}

let runscPath: string | undefined;
let unavailable: string | undefined;

/** Why the gVisor backend cannot run here, or undefined when it can. */
export function gvisorUnavailableReason(): string | undefined {
  if (runscPath || unavailable) return unavailable;
  if (process.platform !== "linux") return (unavailable = "gVisor runs on Linux only");
  const candidates = [process.env.AGENTBOX_RUNSC, ...(process.env.PATH ?? "").split(":").map((d) => path.join(d || ".", "runsc")), "/usr/bin/runsc", "/usr/sbin/runsc"];
  runscPath = candidates.find((c) => c && fs.existsSync(c));
  if (!runscPath) return (unavailable = "runsc (gVisor) is not installed; install it with `sudo apt-get install runsc` (Debian/Ubuntu)");
  if (process.getuid?.() !== 0) {
    runscPath = undefined;
    return (unavailable = "the gVisor backend needs root (runsc makes namespaces and cgroups); run as root");
  }
  return undefined;
}

function runsc(): string {
  const why = gvisorUnavailableReason();
  if (why) throw new TierUnavailableError(why);
  return runscPath!;
}

/** Every box alive in this process, ended synchronously if the process exits with them. */
const live = new Set<GvisorBox>();
process.once("exit", () => {
  for (const b of live) b.endSync();
});

export class GvisorBox {
  readonly client: AgentClient;
  readonly containerId: string;
  private readonly child: ChildProcess;
  private stderrTail = "";
  private exited = false;
  private readonly exitPromise: Promise<void>;
  private killReason: Error | undefined;
  private deathError: Error | undefined;
  private disposing: Promise<void> | undefined;
  /** Called once when the box dies or its channel fails, with the error that explains it. */
  onDeath: ((e: Error) => void) | undefined;

  private constructor(
    readonly spec: BoxSpec,
    readonly dir: string,
    readonly cgroup: HostCgroup,
    restoreFrom: string | undefined,
  ) {
    this.containerId = randomBytes(16).toString("hex"); // fixed length: runsc matches id prefixes
    fs.writeFileSync(path.join(dir, "container.id"), this.containerId);
    const args = [`--root=${path.join(dir, "state")}`, "--network=none"];
    if (restoreFrom) args.push("restore", `--image-path=${restoreFrom}`, "--bundle", path.join(dir, "bundle"), this.containerId);
    else args.push("run", "--bundle", path.join(dir, "bundle"), this.containerId);
    this.child = spawn(runsc(), args, { stdio: ["pipe", "pipe", "pipe"], env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" }, cwd: "/" });
    live.add(this);
    this.exitPromise = new Promise((resolve) => this.child.once("close", () => resolve()));
    this.client = new AgentClient(this.child.stdout!, this.child.stdin!);
    this.client.onFail = (e) => void this.onFailure(e);
    this.child.stderr!.on("data", (c: Buffer) => {
      this.stderrTail = (this.stderrTail + c.toString("utf8")).slice(-STDERR_KEEP);
    });
    this.child.on("error", (e) => this.client.fail(new WorkerCrashedError(`runsc failed to start: ${e.message}`, { cause: e })));
    this.child.on("exit", () => {
      this.exited = true;
      this.client.fail(new WorkerCrashedError("the sandbox exited"));
    });
  }

  /**
   * Start a fresh box; resolves once its agent said ready. `warm` (pooled boxes) also runs one
   * empty REPL cell first, so the first runCode of the sandbox it becomes finds the REPL started
   * and its pages already faulted in.
   */
  static async start(spec: BoxSpec, opts: { warm?: boolean } = {}): Promise<GvisorBox> {
    const box = GvisorBox.prepare(spec, undefined);
    await box.waitReady(
      box.client.ready.then(async () => {
        if (opts.warm) {
          await box.client.request({ type: "run", id: box.client.newId(), code: "None", valueCap: 16 });
          await box.client.request({ type: "exec", id: box.client.newId(), argv: ["true"] });
        }
      }),
    );
    return box;
  }

  /** Restore a box from a checkpoint image; resolves once its agent answers. */
  static async restore(spec: BoxSpec, imagePath: string): Promise<GvisorBox> {
    const box = GvisorBox.prepare(spec, imagePath);
    await box.waitReady(box.client.request({ type: "ping", id: box.client.newId() }));
    return box;
  }

  private static prepare(spec: BoxSpec, restoreFrom: string | undefined): GvisorBox {
    runsc();
    if (!swept) {
      swept = true;
      sweepStale();
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), DIR_PREFIX));
    markOwner(dir);
    let cgroup: HostCgroup;
    try {
      cgroup = HostCgroup.create(CGROUP_PARENT, cgroupName(dir), cgroupMemoryMb(spec.memoryMb) * MiB, spec.cpus);
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw new TierUnavailableError(`cannot create a cgroup for the sandbox (${(e as Error).message}); the gVisor backend needs root and a writable /sys/fs/cgroup`);
    }
    fs.mkdirSync(path.join(dir, "bundle"));
    fs.mkdirSync(path.join(dir, "state"));
    writeOciBundle(path.join(dir, "bundle"), sandboxBundle(spec, cgroup.relPath));
    return new GvisorBox(spec, dir, cgroup, restoreFrom);
  }

  private async waitReady(p: Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        p,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new WorkerCrashedError(`the sandbox did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
        }),
      ]);
    } catch (e) {
      await Promise.race([this.exitPromise, new Promise((r) => setTimeout(r, 1000))]);
      const detail = this.stderrTail.trim().split("\n").slice(-3).join("\n");
      const err = this.deathError ?? (detail ? new WorkerCrashedError(`the sandbox failed to start: ${detail}`) : (e as Error));
      await this.dispose(err);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get alive(): boolean {
    return !this.exited && !this.killReason && !this.client.failed;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Resolves once the agent is ready (for the pool). */
  get ready(): Promise<unknown> {
    return this.client.ready;
  }

  /** Why the box died, once it has (memory limit, crash, protocol violation, kill). */
  get failure(): Error | undefined {
    return this.killReason ?? this.deathError;
  }

  unref(): void {
    this.child.unref();
    for (const s of [this.child.stdout, this.child.stderr, this.child.stdin]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  }

  ref(): void {
    this.child.ref();
    for (const s of [this.child.stdout, this.child.stderr, this.child.stdin]) (s as unknown as { ref?: () => void } | null)?.ref?.();
  }

  kill(reason: Error): void {
    void this.dispose(reason);
  }

  exited$(): Promise<void> {
    return this.disposing ?? this.exitPromise;
  }

  /** The channel failed or the process ended: find out why (the OOM killer, or something else). */
  private async onFailure(e: Error): Promise<void> {
    if (this.deathError || this.killReason) return;
    // The channel usually ends before the process does; wait a moment for the exit so the
    // OOM count is final. A plain race, not settles(): HeavyEngine.call waits on the same exit
    // and reads `failure` as soon as it resumes, so this must resume first (fewer promise hops).
    await Promise.race([this.exitPromise, new Promise((r) => setTimeout(r, 1000))]);
    if (this.killReason) return;
    if (this.cgroup.oomKills() > 0) this.deathError = new MemoryLimitError(this.spec.memoryMb, "the sandbox's memory cgroup ran out and the sandbox was killed");
    else if (e instanceof WorkerCrashedError) {
      const detail = this.stderrTail.trim().split("\n").slice(-3).join("\n");
      this.deathError = new WorkerCrashedError(`the sandbox exited${detail ? `: ${detail}` : ""}`);
    } else this.deathError = e;
    this.onDeath?.(this.deathError);
    void this.dispose(this.deathError);
  }

  /** Checkpoint the box into `imagePath`. The box's container stops; the caller restores from it. */
  async checkpoint(imagePath: string): Promise<void> {
    this.killReason ??= new WorkerCrashedError("checkpointed");
    const r = await runscCmd(this.dir, ["checkpoint", `--image-path=${imagePath}`, this.containerId], RUNSC_CHECKPOINT_MS);
    if (r.code !== 0) throw new WorkerCrashedError(`runsc checkpoint failed: ${r.stderr.trim().split("\n").slice(-2).join(" ")}`);
    await this.dispose(this.killReason);
  }

  /**
   * End the container, the runsc processes, the state dir and the cgroup. Idempotent, and bounded:
   * `runsc kill` and `delete` talk to the sandbox and block for as long as it does not answer (a
   * stopped or wedged sentry), so each is given RUNSC_CMD_MS; past that, or when the container is
   * still there, every process in the sandbox's cgroup (sentry, gofer, ptrace stubs) and the runsc
   * parent are SIGKILLed.
   */
  dispose(reason: Error): Promise<void> {
    this.killReason ??= reason;
    this.disposing ??= (async () => {
      this.client.fail(this.killReason!);
      if (!this.exited) {
        const r = await runscCmd(this.dir, ["kill", "--all", this.containerId, "KILL"], RUNSC_CMD_MS);
        if (r.code !== 0 || !(await settles(this.exitPromise, 3000))) await this.forceEnd();
      }
      // The runsc parent is gone; what holds its stdio (the sentry) may not be.
      if (!(await settles(this.exitPromise, 1000))) await this.forceEnd();
      const d = await runscCmd(this.dir, ["delete", "--force", this.containerId], RUNSC_CMD_MS);
      if (d.code !== 0) this.cgroup.killAll();
      for (let i = 0; i < 50 && !this.cgroup.remove(); i++) await new Promise((r) => setTimeout(r, 20));
      fs.rmSync(this.dir, { recursive: true, force: true });
      live.delete(this);
    })();
    return this.disposing;
  }

  /** SIGKILL the runsc parent and everything in the cgroup until both are gone (stubs may be forking). */
  private async forceEnd(): Promise<void> {
    this.child.kill("SIGKILL");
    for (let i = 0; i < 10; i++) {
      this.cgroup.killAll();
      if (await settles(this.exitPromise, 200)) return;
    }
    // Still not closed: something outside the cgroup holds the channel's pipes. Stop waiting on it.
    for (const s of [this.child.stdin, this.child.stdout, this.child.stderr]) s?.destroy();
    await settles(this.exitPromise, 1000);
  }

  /** Last-resort synchronous end, for process exit. */
  endSync(): void {
    if (!this.exited) {
      spawnSync(runscPath ?? "runsc", [`--root=${path.join(this.dir, "state")}`, "kill", "--all", this.containerId, "KILL"], { timeout: 2000, stdio: "ignore" });
      this.child.kill("SIGKILL");
      spawnSync(runscPath ?? "runsc", [`--root=${path.join(this.dir, "state")}`, "delete", "--force", this.containerId], { timeout: 2000, stdio: "ignore" });
    }
    this.cgroup.killAll();
    this.cgroup.remove();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

const DIR_PREFIX = "agentbox-gvisor-";
/** The cgroup directory (under each hierarchy) that holds gVisor sandboxes. */
export const CGROUP_PARENT = "agentbox";
let swept = false;

function cgroupName(dir: string): string {
  return `sb-${path.basename(dir).slice(DIR_PREFIX.length)}`;
}

/**
 * Remove what sandboxes of host processes that died without cleaning up (SIGKILL) left behind:
 * their containers, state dirs and cgroups. Their guests already ended with the channel.
 */
export function sweepStale(): number {
  let n = 0;
  for (const dir of staleDirs(DIR_PREFIX)) {
    try {
      const cid = fs.readFileSync(path.join(dir, "container.id"), "utf8").trim();
      if (/^[0-9a-f]{32}$/.test(cid)) {
        const root = `--root=${path.join(dir, "state")}`;
        spawnSync(runscPath ?? "runsc", [root, "kill", "--all", cid, "KILL"], { timeout: 5000, stdio: "ignore" });
        spawnSync(runscPath ?? "runsc", [root, "delete", "--force", cid], { timeout: 5000, stdio: "ignore" });
      }
    } catch {
      // no container was started
    }
    HostCgroup.forName(CGROUP_PARENT, cgroupName(dir))?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
    n++;
  }
  return n;
}

/** How long a `runsc kill` or `delete` may take before it is killed (they hang on a wedged sandbox). */
const RUNSC_CMD_MS = 5000;
/** `runsc checkpoint` writes the whole sandbox memory out. */
const RUNSC_CHECKPOINT_MS = 120_000;

/** True when `p` settled within `ms`. */
function settles(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]).finally(() => clearTimeout(timer));
}

/** Run one runsc subcommand on a box's state dir; past `timeoutMs` it is SIGKILLed and reports code null. */
function runscCmd(dir: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(runscPath ?? "runsc", [`--root=${path.join(dir, "state")}`, ...args], { stdio: ["ignore", "ignore", "pipe"], env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } });
    let stderr = "";
    const timer = setTimeout(() => {
      stderr += `\nrunsc ${args[0]} did not finish within ${timeoutMs} ms`;
      c.kill("SIGKILL");
    }, timeoutMs);
    c.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4096)));
    c.on("error", (e) => {
      clearTimeout(timer);
      resolve({ code: null, stderr: e.message });
    });
    c.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/** The OCI bundle: read-only shared root, size-capped tmpfs scratch, no capabilities, limits. */
function sandboxBundle(spec: BoxSpec, cgroupsPath: string): OciBundle {
  const tmpfs = (destination: string, mode: string, owner: boolean) => ({
    destination,
    type: "tmpfs",
    source: "tmpfs",
    options: ["nosuid", "nodev", `size=${spec.diskMb}m`, `mode=${mode}`, ...(owner ? [`uid=${GUEST_UID}`, `gid=${GUEST_UID}`] : [])],
  });
  return {
    rootfs: spec.image.rootfs,
    readonlyRoot: true,
    user: spec.agentArgv ? { uid: GUEST_UID, gid: GUEST_UID } : { uid: 0, gid: 0 },
    args: spec.agentArgv ?? ["/usr/bin/python3", "-I", "-S", AGENT_GUEST_PATH],
    env: ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/user", "LANG=C.UTF-8", "USER=user"],
    cwd: "/home/user",
    // The agent runs as root with only what it needs to start children as GUEST_UID and to signal
    // them; the bounding set is empty, so no child (all run as GUEST_UID) can ever hold a capability.
    // A replaced agent (tests' hostile guests) gets nothing.
    capabilities: spec.agentArgv ? [] : ["CAP_SETUID", "CAP_SETGID", "CAP_KILL"],
    rlimits: [
      { type: "RLIMIT_NPROC", hard: GUEST_MAX_PROCESSES, soft: GUEST_MAX_PROCESSES },
      { type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 },
      { type: "RLIMIT_CORE", hard: 0, soft: 0 },
    ],
    hostname: "sandbox",
    mounts: [
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      tmpfs("/tmp", "1777", false),
      tmpfs("/home/user", "0755", true),
      // After the tmpfs they live in: their mount points are made there, never in the shared image.
      ...(spec.mounts ?? []).map((m) => ({ destination: m.guestPath, type: "bind", source: m.hostPath, options: ["rbind", "ro", "nosuid", "nodev", "noexec"] })),
    ],
    cgroupsPath,
  };
}
