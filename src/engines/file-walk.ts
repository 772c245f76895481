// Walking a sandbox's own files through the Engine file API alone: what tier "auto" copies at its
// move and what a nano snapshot saves as its file image are the same walk (/home/user and /tmp,
// mounts skipped, a budget of entries), written once here. Imports no engine.
import path from "node:path";
import type { Engine } from "./engine.js";

/** Where a sandbox keeps its files on both tiers: the heavy tier's only writable directories. */
export const WRITABLE_ROOTS = ["/home/user", "/tmp"] as const;

export interface WalkOptions {
  /** Guest paths of mounts: their host files are not the sandbox's, never walked. */
  mountPaths: readonly string[];
  /** Most entries walked: a worker that lists forever cannot hold the caller. */
  maxEntries: number;
  /** The error past `maxEntries`. */
  tooMany(): Error;
}

/** One entry of the walk: a directory (visited before what it holds) or a regular file. */
export interface WalkEntry {
  path: string;
  type: "dir" | "file";
  size: number;
}

/**
 * Visit every directory and regular file under WRITABLE_ROOTS of `from`, parents first, in the
 * order the engine lists them. Symbolic links are left out: the files API cannot make them.
 */
export async function walkFiles(from: Pick<Engine, "list" | "exists">, opts: WalkOptions, visit: (e: WalkEntry) => Promise<void>): Promise<void> {
  let budget = opts.maxEntries;
  const walk = async (dir: string): Promise<void> => {
    for (const e of await from.list(dir)) {
      // The listing comes from the worker, which runs guest code: a name is one path segment or skipped.
      if (e.name === "" || e.name === "." || e.name === ".." || e.name.includes("/") || e.name.includes("\0")) continue;
      const p = path.posix.join(dir, e.name);
      if (opts.mountPaths.some((m) => p === m || p.startsWith(`${m}/`))) continue;
      if (--budget < 0) throw opts.tooMany();
      if (e.type === "dir") {
        await visit({ path: p, type: "dir", size: 0 });
        await walk(p);
      } else if (e.type === "file") {
        await visit({ path: p, type: "file", size: e.size });
      }
    }
  };
  for (const root of WRITABLE_ROOTS) {
    if (await from.exists(root)) await walk(root);
  }
}
