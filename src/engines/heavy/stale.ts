// Leftovers of host processes that died without cleaning up (SIGKILL): each heavy sandbox keeps
// a private directory under the temp dir holding its owner's pid; a directory whose owner is gone
// is stale, and the next agentbox process that starts a sandbox sweeps it.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** Record this process as the owner of a sandbox directory. */
export function markOwner(dir: string): void {
  fs.writeFileSync(path.join(dir, "owner.pid"), String(process.pid));
}

/** Directories under the temp dir named `prefix*` whose owner process is gone. */
export function staleDirs(prefix: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith(prefix));
  } catch {
    return [];
  }
  return names
    .map((name) => path.join(os.tmpdir(), name))
    .filter((dir) => {
      let owner: number;
      try {
        owner = Number(fs.readFileSync(path.join(dir, "owner.pid"), "utf8"));
      } catch {
        return false; // being created right now, or not ours
      }
      return Number.isInteger(owner) && owner > 0 && !pidAlive(owner);
    });
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
