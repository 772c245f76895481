// Helpers shared by the server, MCP and Python-client tests: child processes, a spawned server,
// and the gVisor sandboxes a process owns.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { HostCgroup } from "../src/engines/heavy/cgroups.js";
import { CGROUP_PARENT } from "../src/engines/heavy-gvisor/box.js";
import { agentboxEnv } from "./helpers.js";

export const BIN = fileURLToPath(new URL("../bin/agentbox.js", import.meta.url));

/** Processes whose parent is `parent` (from /proc): the worker processes a host has spawned. */
export function childPids(parent = process.pid): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === parent) out.push(Number(d));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Start `agentbox serve --port 0 ...`; resolves with the process and its URL once it listens. */
export async function spawnServer(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ proc: ChildProcess; url: string; stderr: () => string }> {
  const proc = spawn(process.execPath, [BIN, "serve", "--port", "0", ...args], { env: agentboxEnv(env as Record<string, string>), stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once("exit", (code) => reject(new Error(`serve exited (${code}) before listening: ${err}`)));
  });
  return { proc, url, stderr: () => err };
}

/**
 * The gVisor sandboxes a process owns right now, from their private dirs (`owner.pid`): what
 * `leftovers()` of test/heavy.ts checks after the process killed them (or was killed).
 */
export function heavyBoxesOf(pid: number): { containerId: string; dir: string; cgroupDirs: string[] }[] {
  const prefix = "agentbox-gvisor-";
  const out: { containerId: string; dir: string; cgroupDirs: string[] }[] = [];
  for (const name of readdirSync(tmpdir()).filter((d) => d.startsWith(prefix))) {
    const dir = path.join(tmpdir(), name);
    try {
      if (Number(readFileSync(path.join(dir, "owner.pid"), "utf8")) !== pid) continue;
      const containerId = readFileSync(path.join(dir, "container.id"), "utf8").trim();
      out.push({ containerId, dir, cgroupDirs: HostCgroup.forName(CGROUP_PARENT, `sb-${name.slice(prefix.length)}`)?.existing() ?? [] });
    } catch {
      // being created or removed right now
    }
  }
  return out;
}
