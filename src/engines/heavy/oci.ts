// The OCI runtime config (a runsc bundle's config.json), written in one place for every bundle
// the project runs under gVisor: sandboxes (heavy-gvisor/box.ts), the image build's precompile
// step (heavy/image.ts) and the bench's bare-runsc floor. Callers say what differs; what every
// bundle shares (namespaces, no new privileges, /proc and /dev) is here.
import fs from "node:fs";
import path from "node:path";

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export interface OciBundle {
  /** The root file system (a host path) and whether the guest may write it. */
  rootfs: string;
  readonlyRoot: boolean;
  args: string[];
  user: { uid: number; gid: number };
  env: string[];
  cwd: string;
  /** Capabilities the process keeps (effective and permitted); the bounding set is empty. Default none. */
  capabilities?: string[];
  rlimits?: { type: string; hard: number; soft: number }[];
  hostname?: string;
  /** Mounts after /proc and /dev (a tmpfs). */
  mounts?: OciMount[];
  /** The sandbox's cgroup, relative to each hierarchy's root. */
  cgroupsPath?: string;
}

export function ociConfig(b: OciBundle): object {
  const caps = b.capabilities ?? [];
  const config: Record<string, unknown> = {
    ociVersion: "1.0.0",
    process: {
      user: b.user,
      args: b.args,
      env: b.env,
      cwd: b.cwd,
      terminal: false,
      capabilities: { bounding: [], effective: caps, inheritable: [], permitted: caps, ambient: [] },
      noNewPrivileges: true,
      ...(b.rlimits ? { rlimits: b.rlimits } : {}),
    },
    root: { path: b.rootfs, readonly: b.readonlyRoot },
    ...(b.hostname ? { hostname: b.hostname } : {}),
    mounts: [{ destination: "/proc", type: "proc", source: "proc" }, { destination: "/dev", type: "tmpfs", source: "tmpfs" }, ...(b.mounts ?? [])],
    linux: {
      ...(b.cgroupsPath ? { cgroupsPath: b.cgroupsPath } : {}),
      namespaces: [{ type: "pid" }, { type: "network" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
    },
  };
  return config;
}

/** Write `config.json` of a bundle into `dir`. */
export function writeOciBundle(dir: string, b: OciBundle): void {
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(ociConfig(b)));
}
