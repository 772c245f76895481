// One host cgroup per heavy sandbox (a gVisor container or a microVM's VMM), made by the host
// before the sandbox starts: memory limit, CPU quota, and afterwards the OOM-kill count that tells
// a memory-limit death from a crash. Supports cgroup v1 (and the hybrid layout, whose v2 mount
// has no memory controller) and the unified v2 layout.
import fs from "node:fs";
import path from "node:path";

const ROOT = "/sys/fs/cgroup";
const CPU_PERIOD_US = 100_000;
/** v1 controllers something (runsc) may create under a sandbox's path; all are removed on dispose. */
const V1_CONTROLLERS = ["memory", "cpu", "cpuacct", "cpu,cpuacct", "cpuset", "pids", "blkio", "devices", "freezer", "net_cls", "net_prio", "perf_event", "hugetlb", "systemd"];

export type CgroupLayout = "v1" | "v2";

/** v2 only where the unified root has the memory controller; else v1 when its memory mount is there. */
export function cgroupLayout(): CgroupLayout | undefined {
  const controllers = path.join(ROOT, "cgroup.controllers");
  if (fs.existsSync(controllers) && fs.readFileSync(controllers, "utf8").includes("memory")) return "v2";
  if (fs.existsSync(path.join(ROOT, "memory", "memory.limit_in_bytes"))) return "v1";
  return undefined;
}

export class HostCgroup {
  private constructor(
    readonly layout: CgroupLayout,
    /** Directory under each hierarchy that holds one kind of sandbox ("agentbox", ...). */
    readonly parent: string,
    readonly name: string,
  ) {}

  /** The path relative to the hierarchy root (what runsc is given as linux.cgroupsPath). */
  get relPath(): string {
    return `/${this.parent}/${this.name}`;
  }

  /** The cgroup `parent/name` (made earlier, perhaps by another process), to inspect or remove. */
  static forName(parent: string, name: string): HostCgroup | undefined {
    const layout = cgroupLayout();
    return layout ? new HostCgroup(layout, parent, name) : undefined;
  }

  /** Create the cgroup with its limits. Throws when cgroups cannot be written (not root). */
  static create(parent: string, name: string, memoryBytes: number, cpus: number): HostCgroup {
    const layout = cgroupLayout();
    if (!layout) throw new Error(`no cgroup memory controller under ${ROOT}`);
    const cg = new HostCgroup(layout, parent, name);
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
        for (const dir of [ROOT, path.join(ROOT, parent)]) {
          fs.mkdirSync(dir, { recursive: true });
          try {
            fs.writeFileSync(path.join(dir, "cgroup.subtree_control"), "+memory +cpu +pids");
          } catch {
            // already enabled, or delegated by someone else
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

  /** The `cgroup.procs` files a process writes its pid into to enter this cgroup. */
  procsFiles(): string[] {
    return this.layout === "v1" ? [path.join(this.dir("memory"), "cgroup.procs"), path.join(this.dir("cpu"), "cgroup.procs")] : [path.join(this.dir(), "cgroup.procs")];
  }

  /** SIGKILL every process still in this cgroup (e.g. a VMM whose owner died). */
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

  /** The memory cap as the kernel holds it, bytes. */
  memoryLimitBytes(): number {
    const f = this.layout === "v1" ? path.join(this.dir("memory"), "memory.limit_in_bytes") : path.join(this.dir(), "memory.max");
    return Number(fs.readFileSync(f, "utf8").trim());
  }

  /** How many times the kernel's OOM killer fired inside this cgroup. */
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
    const dirs = this.layout === "v1" ? V1_CONTROLLERS.map((c) => this.dir(c)) : [this.dir()];
    return dirs.filter((d) => fs.existsSync(d));
  }

  /** Remove the cgroup (its processes must be gone). Returns false when some directory stayed. */
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
    return controller ? path.join(ROOT, controller, this.parent, this.name) : path.join(ROOT, this.parent, this.name);
  }
}
