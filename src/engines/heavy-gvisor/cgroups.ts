// One cgroup per heavy sandbox, made by the host before runsc starts (runsc then joins it and
// leaves its limits alone): memory limit, CPU quota, and afterwards the OOM-kill count that tells
// a memory-limit death from a crash. Supports cgroup v1 (and the hybrid layout, whose v2 mount
// has no memory controller) and the unified v2 layout.
import fs from "node:fs";
import path from "node:path";

const ROOT = "/sys/fs/cgroup";
const PARENT = "agentbox";
const CPU_PERIOD_US = 100_000;
/** v1 controllers runsc may create under our path; all are removed on dispose. */
const V1_CONTROLLERS = ["memory", "cpu", "cpuacct", "cpu,cpuacct", "cpuset", "pids", "blkio", "devices", "freezer", "net_cls", "net_prio", "perf_event", "hugetlb", "systemd"];

export type CgroupLayout = "v1" | "v2";

export function cgroupLayout(): CgroupLayout | undefined {
  if (fs.existsSync(path.join(ROOT, "cgroup.controllers"))) return "v2";
  if (fs.existsSync(path.join(ROOT, "memory", "memory.limit_in_bytes"))) return "v1";
  return undefined;
}

export class SandboxCgroup {
  /** The path runsc is given (linux.cgroupsPath). */
  readonly relPath: string;
  private constructor(
    readonly layout: CgroupLayout,
    name: string,
  ) {
    this.relPath = `/${PARENT}/${name}`;
  }

  /** The cgroup of that name, for removal (it may or may not exist). */
  static forName(name: string): SandboxCgroup {
    return new SandboxCgroup(cgroupLayout() ?? "v1", name);
  }

  /** Create the cgroup with its limits. Throws when cgroups cannot be written (not root). */
  static create(name: string, memoryBytes: number, cpus: number): SandboxCgroup {
    const layout = cgroupLayout();
    if (!layout) throw new Error(`no usable cgroup file system under ${ROOT}`);
    const cg = new SandboxCgroup(layout, name);
    const quota = Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
    try {
      if (layout === "v1") {
        fs.mkdirSync(cg.v1("memory"), { recursive: true });
        fs.writeFileSync(path.join(cg.v1("memory"), "memory.limit_in_bytes"), String(memoryBytes));
        try {
          fs.writeFileSync(path.join(cg.v1("memory"), "memory.memsw.limit_in_bytes"), String(memoryBytes));
        } catch {
          // no swap accounting on this kernel
        }
        fs.mkdirSync(cg.v1("cpu"), { recursive: true });
        fs.writeFileSync(path.join(cg.v1("cpu"), "cpu.cfs_period_us"), String(CPU_PERIOD_US));
        fs.writeFileSync(path.join(cg.v1("cpu"), "cpu.cfs_quota_us"), String(quota));
      } else {
        for (const dir of [ROOT, path.join(ROOT, PARENT)]) {
          fs.mkdirSync(dir, { recursive: true });
          try {
            fs.writeFileSync(path.join(dir, "cgroup.subtree_control"), "+memory +cpu +pids");
          } catch {
            // already enabled, or delegated by someone else
          }
        }
        fs.mkdirSync(cg.v2(), { recursive: true });
        fs.writeFileSync(path.join(cg.v2(), "memory.max"), String(memoryBytes));
        try {
          fs.writeFileSync(path.join(cg.v2(), "memory.swap.max"), "0");
        } catch {
          // no swap controller
        }
        fs.writeFileSync(path.join(cg.v2(), "cpu.max"), `${quota} ${CPU_PERIOD_US}`);
      }
    } catch (e) {
      cg.remove();
      throw e;
    }
    return cg;
  }

  /** How many times the kernel's OOM killer fired inside this cgroup. */
  oomKills(): number {
    try {
      const text =
        this.layout === "v1" ? fs.readFileSync(path.join(this.v1("memory"), "memory.oom_control"), "utf8") : fs.readFileSync(path.join(this.v2(), "memory.events"), "utf8");
      const m = /oom_kill (\d+)/.exec(text);
      return m ? Number(m[1]) : 0;
    } catch {
      return 0;
    }
  }

  /** Every directory of this cgroup that exists now (for leak checks). */
  existing(): string[] {
    const dirs = this.layout === "v1" ? V1_CONTROLLERS.map((c) => this.v1(c)) : [this.v2()];
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

  private v1(controller: string): string {
    return path.join(ROOT, controller, PARENT, path.basename(this.relPath));
  }

  private v2(): string {
    return path.join(ROOT, PARENT, path.basename(this.relPath));
  }
}
