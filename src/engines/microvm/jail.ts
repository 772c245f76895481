// Host-side confinement of a VMM process: a cgroup with a memory and a CPU cap (cgroup v1, or
// the hybrid layout whose v2 mount has no memory controller, or unified v2) that the process
// enters before it execs the VMM, and a network namespace of its own (`unshare --net`), so a
// compromised VMM has no network either. Afterwards: the OOM-kill count and removal.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const ROOT = "/sys/fs/cgroup";
const PARENT = "agentbox-microvm";
const CPU_PERIOD_US = 100_000;

export type CgroupLayout = "v1" | "v2";

export function cgroupLayout(): CgroupLayout | undefined {
  if (fs.existsSync(path.join(ROOT, "cgroup.controllers")) && fs.readFileSync(path.join(ROOT, "cgroup.controllers"), "utf8").includes("memory")) return "v2";
  if (fs.existsSync(path.join(ROOT, "memory", "memory.limit_in_bytes"))) return "v1";
  return undefined;
}

export class VmmCgroup {
  private constructor(
    readonly layout: CgroupLayout,
    readonly name: string,
  ) {}

  /** Create the cgroup with its caps. Throws when cgroups cannot be written (not root). */
  static create(name: string, memoryBytes: number, cpus: number): VmmCgroup {
    const layout = cgroupLayout();
    if (!layout) throw new Error(`no cgroup memory controller under ${ROOT}`);
    const cg = new VmmCgroup(layout, name);
    const quota = Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
    try {
      if (layout === "v1") {
        const mem = cg.dir("memory");
        fs.mkdirSync(mem, { recursive: true });
        fs.writeFileSync(path.join(mem, "memory.limit_in_bytes"), String(memoryBytes));
        try {
          fs.writeFileSync(path.join(mem, "memory.memsw.limit_in_bytes"), String(memoryBytes));
        } catch {
          // no swap accounting on this kernel
        }
        const cpu = cg.dir("cpu");
        fs.mkdirSync(cpu, { recursive: true });
        fs.writeFileSync(path.join(cpu, "cpu.cfs_period_us"), String(CPU_PERIOD_US));
        fs.writeFileSync(path.join(cpu, "cpu.cfs_quota_us"), String(quota));
      } else {
        for (const dir of [ROOT, path.join(ROOT, PARENT)]) {
          fs.mkdirSync(dir, { recursive: true });
          try {
            fs.writeFileSync(path.join(dir, "cgroup.subtree_control"), "+memory +cpu");
          } catch {
            // already enabled
          }
        }
        const d = cg.dir();
        fs.mkdirSync(d, { recursive: true });
        fs.writeFileSync(path.join(d, "memory.max"), String(memoryBytes));
        try {
          fs.writeFileSync(path.join(d, "memory.swap.max"), "0");
        } catch {
          // no swap controller
        }
        fs.writeFileSync(path.join(d, "cpu.max"), `${quota} ${CPU_PERIOD_US}`);
      }
    } catch (e) {
      cg.remove();
      throw e;
    }
    return cg;
  }

  /** The cgroup named `name` (made by an earlier process), to empty and remove it. */
  static forName(name: string): VmmCgroup | undefined {
    const layout = cgroupLayout();
    return layout ? new VmmCgroup(layout, name) : undefined;
  }

  /** SIGKILL every process still in this cgroup (a VMM whose owner died). */
  killAll(): void {
    for (const f of this.procsFiles()) {
      let pids: string[] = [];
      try {
        pids = fs.readFileSync(f, "utf8").split("\n").filter(Boolean);
      } catch {
        continue;
      }
      for (const pid of pids) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
  }

  /** The `cgroup.procs` files a process writes its pid into to enter this cgroup. */
  procsFiles(): string[] {
    return this.layout === "v1" ? [path.join(this.dir("memory"), "cgroup.procs"), path.join(this.dir("cpu"), "cgroup.procs")] : [path.join(this.dir(), "cgroup.procs")];
  }

  /** The memory cap as the kernel holds it, bytes. */
  memoryLimitBytes(): number {
    const f = this.layout === "v1" ? path.join(this.dir("memory"), "memory.limit_in_bytes") : path.join(this.dir(), "memory.max");
    return Number(fs.readFileSync(f, "utf8").trim());
  }

  /** How many times the OOM killer fired inside this cgroup. */
  oomKills(): number {
    try {
      const text = this.layout === "v1" ? fs.readFileSync(path.join(this.dir("memory"), "memory.oom_control"), "utf8") : fs.readFileSync(path.join(this.dir(), "memory.events"), "utf8");
      return Number(/oom_kill (\d+)/.exec(text)?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  /** Every directory of this cgroup that exists now (for leak checks). */
  existing(): string[] {
    const dirs = this.layout === "v1" ? [this.dir("memory"), this.dir("cpu")] : [this.dir()];
    return dirs.filter((d) => fs.existsSync(d));
  }

  /** Remove the cgroup (its processes must be gone). False when a directory stayed. */
  remove(): boolean {
    let ok = true;
    for (const d of this.existing()) {
      try {
        fs.rmdirSync(d);
      } catch {
        ok = false;
      }
    }
    return ok;
  }

  private dir(controller?: string): string {
    return controller ? path.join(ROOT, controller, PARENT, this.name) : path.join(ROOT, PARENT, this.name);
  }
}

let netnsWorks: boolean | undefined;

/** `unshare --net --` when this host can make network namespaces (root), else []. */
export function netnsPrefix(): string[] {
  netnsWorks ??= process.platform === "linux" && spawnSync("unshare", ["--net", "true"], { stdio: "ignore", timeout: 5000 }).status === 0;
  return netnsWorks ? ["unshare", "--net", "--"] : [];
}

/**
 * argv that enters the cgroup, then the network namespace, then execs `argv`: the VMM never
 * runs a single instruction outside its caps.
 */
export function jailedArgv(cg: VmmCgroup | undefined, argv: string[]): string[] {
  const enter = (cg?.procsFiles() ?? []).map((f) => `echo $$ > '${f}'`).join(" && ");
  return ["/bin/sh", "-c", `${enter ? `${enter} && ` : ""}exec "$@"`, "agentbox-vmm", ...netnsPrefix(), ...argv];
}
