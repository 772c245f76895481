// Walking a sandbox's own files through the Engine file API alone: what tier "auto" copies at its
// move and what a nano snapshot saves as its file image are the same walk (/home/user and /tmp,
// mounts skipped, a budget of entries), written once here. Imports no engine.
import path from "node:path";
import type { DirEntry } from "../protocol/messages.js";
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
 * One walk's rule for a listed entry of `dir`: the entry to visit, or undefined for one it skips
 * (a name that is not one path segment, a mount, anything but a directory or regular file).
 * Every entry past the name and mount checks spends one of `maxEntries` (throws past it).
 */
export function entryStep(opts: WalkOptions): (dir: string, e: DirEntry) => WalkEntry | undefined {
  let budget = opts.maxEntries;
  return (dir, e) => {
    // The listing comes from the worker, which runs guest code: a name is one path segment or skipped.
    if (e.name === "" || e.name === "." || e.name === ".." || e.name.includes("/") || e.name.includes("\0")) return undefined;
    const p = path.posix.join(dir, e.name);
    if (opts.mountPaths.some((m) => p === m || p.startsWith(`${m}/`))) return undefined;
    if (--budget < 0) throw opts.tooMany();
    if (e.type === "dir") return { path: p, type: "dir", size: 0 };
    if (e.type === "file") return { path: p, type: "file", size: e.size };
    return undefined;
  };
}

/**
 * Visit every directory and regular file under WRITABLE_ROOTS of `from`, parents first, in the
 * order the engine lists them. Symbolic links are left out: the files API cannot make them.
 */
export async function walkFiles(from: Pick<Engine, "list" | "exists">, opts: WalkOptions, visit: (e: WalkEntry) => Promise<void>): Promise<void> {
  const step = entryStep(opts);
  const walk = async (dir: string): Promise<void> => {
    for (const listed of await from.list(dir)) {
      const e = step(dir, listed);
      if (!e) continue;
      await visit(e);
      if (e.type === "dir") await walk(e.path);
    }
  };
  for (const root of WRITABLE_ROOTS) {
    if (await from.exists(root)) await walk(root);
  }
}

/**
 * The entries `walkFiles` visits, in the same order (parents first, as listed), found with the
 * listings in flight together: each directory is listed as soon as its parent's listing names it,
 * and both roots' `exists` and `list` go out at once (a root's listing counts only if it exists).
 * Over a worker's pipe every request is a round trip, so a tree of depth d costs about d + 1 of
 * them instead of one per directory; for callers that need the whole list before acting on it.
 */
export async function listTree(from: Pick<Engine, "list" | "exists">, opts: WalkOptions): Promise<WalkEntry[]> {
  const step = entryStep(opts);
  const listDir = async (dir: string, listing: Promise<Awaited<ReturnType<Engine["list"]>>>): Promise<WalkEntry[]> => {
    const here: WalkEntry[] = [];
    const below: Promise<WalkEntry[]>[] = [];
    try {
      for (const listed of await listing) {
        const e = step(dir, listed);
        if (!e) continue;
        here.push(e);
        below.push(e.type === "dir" ? listDir(e.path, from.list(e.path)) : Promise.resolve([]));
      }
    } catch (e) {
      for (const b of below) b.catch(() => undefined); // subtrees already under way end unobserved
      throw e;
    }
    // Promise.all: a failure in one subtree does not leave the others' rejections unhandled.
    const subs = await Promise.all(below);
    return here.flatMap((e, i) => [e, ...subs[i]!]);
  };
  const roots = await Promise.all(
    WRITABLE_ROOTS.map(async (root) => {
      const listing = from.list(root);
      listing.catch(() => undefined); // awaited below only when the root exists
      return (await from.exists(root)) ? listDir(root, listing) : [];
    }),
  );
  return roots.flat();
}

/**
 * `f` over `items` with at most `limit` calls in flight, results in `items`' order. After a
 * failure no further call starts, and the first failure is what it throws.
 */
export async function mapLimited<T, R>(items: readonly T[], limit: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const lane = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await f(items[i]!);
      } catch (e) {
        failed = true;
        throw e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}
