// A small in-memory file tree with the sandbox's quotas, stable (code-point) listings and a
// content digest: the VFS of engines that have no file system of their own (QuickJS). Not tied to
// Emscripten. Errors are `VfsError`s carrying a POSIX-style code; a quota refusal also names the
// limit, and is remembered until `takeLimitHit()` so a run can report it.
import { createHash } from "node:crypto";
import { compareCodePoints, type VfsQuota, type VfsUsage } from "./memfs.js";

export type VfsErrorCode =
  | "ENOENT"
  | "EEXIST"
  | "ENOTDIR"
  | "EISDIR"
  | "ENOTEMPTY"
  | "ENOSPC"
  | "EDQUOT"
  | "EINVAL"
  | "EBUSY"
  | "EROFS"
  | "EACCES"
  | "EXDEV"
  | "EFBIG"
  | "EIO";

const DESCRIPTIONS: Record<VfsErrorCode, string> = {
  ENOENT: "no such file or directory",
  EEXIST: "file already exists",
  ENOTDIR: "not a directory",
  EISDIR: "illegal operation on a directory",
  ENOTEMPTY: "directory not empty",
  ENOSPC: "file system byte quota reached (limits.vfsBytes)",
  EDQUOT: "file system file-count quota reached (limits.vfsFiles)",
  EINVAL: "invalid argument",
  EBUSY: "resource busy",
  EROFS: "read-only file system (a read-only mount)",
  EACCES: "permission denied (the path leads outside its mount)",
  EXDEV: "cross-device link not permitted (between a mount and the rest of the file system)",
  EFBIG: "file too large to read into the sandbox (limits.memoryMb)",
  EIO: "input/output error",
};

export class VfsError extends Error {
  constructor(
    readonly code: VfsErrorCode,
    readonly path: string,
    readonly limit?: "vfsBytes" | "vfsFiles",
  ) {
    super(`${code}: ${DESCRIPTIONS[code]}, ${JSON.stringify(path)}`);
  }

  /** The message without the code and path, e.g. "no such file or directory". */
  get description(): string {
    return DESCRIPTIONS[this.code];
  }
}

interface FileNode {
  kind: "file";
  data: Uint8Array;
}
interface DirNode {
  kind: "dir";
  children: Map<string, Node>;
}
type Node = FileNode | DirNode;

export interface TreeEntry {
  name: string;
  path: string;
  /** "symlink" only inside host mounts (the in-memory tree has no links). */
  type: "file" | "dir" | "symlink";
  size: number;
}

/** Resolve `p` against `cwd` into absolute path parts; `.`/`..` never climb above `/`. */
export function splitPath(p: string, cwd = "/"): string[] {
  if (typeof p !== "string" || p.length === 0 || p.includes("\0") || p.length > 4096) throw new VfsError("EINVAL", String(p));
  const parts: string[] = [];
  for (const seg of (p.startsWith("/") ? p : `${cwd}/${p}`).split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") parts.pop();
    else parts.push(seg);
  }
  return parts;
}

export class MemTree {
  private readonly root: DirNode = { kind: "dir", children: new Map() };
  private usage: VfsUsage = { bytes: 0, files: 0 };
  /** Net growth of read-write host mounts (see chargeExternal), never below zero. */
  private external: VfsUsage = { bytes: 0, files: 0 };
  private limitHit: "vfsBytes" | "vfsFiles" | undefined;
  private digestCache: string | undefined;

  /** `baseline`: directories made before quotas apply, free of charge (e.g. /tmp, the home dir). */
  private readonly free = new WeakSet<Node>();

  constructor(
    public quota: VfsQuota,
    baseline: string[] = [],
    readonly cwd = "/",
  ) {
    const q = quota;
    this.quota = { vfsBytes: Infinity, vfsFiles: Infinity };
    for (const d of baseline) this.mkdir(d, true);
    const mark = (n: Node) => {
      this.free.add(n);
      if (n.kind === "dir") for (const c of n.children.values()) mark(c);
    };
    mark(this.root);
    this.quota = q;
    this.usage = { bytes: 0, files: 0 };
  }

  getUsage(): VfsUsage {
    return { bytes: this.usage.bytes + this.external.bytes, files: this.usage.files + this.external.files };
  }

  /**
   * Growth outside the tree (read-write host mounts) counted against the same quotas, checked
   * before the host write; negative amounts give room back, never below zero (deleting files that
   * were already in the directory buys no extra room).
   */
  chargeExternal(bytes: number, files: number, p: string): void {
    if (files > 0) this.charge(p, files, 0);
    if (bytes > 0) this.charge(p, 0, bytes);
    this.external = { bytes: Math.max(0, this.external.bytes + bytes), files: Math.max(0, this.external.files + files) };
  }

  /** Which quota refused a write since the last call, if any. */
  takeLimitHit(): "vfsBytes" | "vfsFiles" | undefined {
    const hit = this.limitHit;
    this.limitHit = undefined;
    return hit;
  }

  /** Absolute, normalised form of `p`. */
  resolve(p: string): string {
    return `/${splitPath(p, this.cwd).join("/")}`;
  }

  readFile(p: string): Uint8Array {
    const n = this.lookup(p);
    if (n.kind === "dir") throw new VfsError("EISDIR", p);
    return n.data;
  }

  /** Create or replace (or with `append`, extend) a file. `parents`: create missing directories. */
  writeFile(p: string, data: Uint8Array, opts: { append?: boolean; parents?: boolean } = {}): void {
    const parts = splitPath(p, this.cwd);
    const name = parts.pop();
    if (name === undefined) throw new VfsError("EISDIR", p);
    const dir = opts.parents ? this.mkdirParts(parts, p) : this.dirAt(parts, p);
    const old = dir.children.get(name);
    if (old?.kind === "dir") throw new VfsError("EISDIR", p);
    const oldSize = old?.data.length ?? 0;
    const newSize = opts.append ? oldSize + data.length : data.length;
    if (!old) this.charge(p, 1, 0);
    if (newSize > oldSize && this.usage.bytes + this.external.bytes + (newSize - oldSize) > this.quota.vfsBytes) {
      this.refuse("vfsBytes", p);
    }
    let bytes: Uint8Array;
    if (opts.append && old) {
      bytes = new Uint8Array(newSize);
      bytes.set(old.data);
      bytes.set(data, oldSize);
    } else bytes = new Uint8Array(data); // a copy: callers' buffers stay theirs
    if (!old) this.usage.files += 1;
    this.usage.bytes += newSize - oldSize;
    if (old) old.data = bytes;
    else dir.children.set(name, { kind: "file", data: bytes });
    this.digestCache = undefined;
  }

  /**
   * Make a directory; `recursive`: parents too, and no error if it exists as a directory (as
   * `mkdir -p`). A file already there is EEXIST either way; a file among the parents, ENOTDIR.
   */
  mkdir(p: string, recursive = false): void {
    const parts = splitPath(p, this.cwd);
    const name = parts.pop();
    if (name === undefined) {
      if (recursive) return;
      throw new VfsError("EEXIST", p);
    }
    const dir = recursive ? this.mkdirParts(parts, p) : this.dirAt(parts, p);
    const existing = dir.children.get(name);
    if (existing) {
      if (recursive && existing.kind === "dir") return;
      throw new VfsError("EEXIST", p);
    }
    this.charge(p, 1, 0);
    dir.children.set(name, { kind: "dir", children: new Map() });
    this.usage.files += 1;
    this.digestCache = undefined;
  }

  exists(p: string): boolean {
    try {
      this.lookup(p);
      return true;
    } catch (e) {
      if (e instanceof VfsError && e.code !== "EINVAL") return false;
      throw e;
    }
  }

  stat(p: string): { type: "file" | "dir"; size: number } {
    const n = this.lookup(p);
    return n.kind === "file" ? { type: "file", size: n.data.length } : { type: "dir", size: 0 };
  }

  /** Names in a directory, in code-point order. */
  readdir(p: string): string[] {
    const n = this.lookup(p);
    if (n.kind !== "dir") throw new VfsError("ENOTDIR", p);
    return [...n.children.keys()].sort(compareCodePoints);
  }

  /** Entries of a directory with their type and size, in code-point order. */
  list(p: string): TreeEntry[] {
    const base = this.resolve(p);
    return this.readdir(p).map((name) => {
      const full = base === "/" ? `/${name}` : `${base}/${name}`;
      return { name, path: full, ...this.stat(full) };
    });
  }

  /** Remove a file, or a directory (non-empty only with `recursive`). */
  remove(p: string, recursive = false): void {
    const parts = splitPath(p, this.cwd);
    const name = parts.pop();
    if (name === undefined) throw new VfsError("EBUSY", p);
    const dir = this.dirAt(parts, p);
    const n = dir.children.get(name);
    if (!n) throw new VfsError("ENOENT", p);
    if (n.kind === "dir" && n.children.size > 0 && !recursive) throw new VfsError("ENOTEMPTY", p);
    dir.children.delete(name);
    this.release(n);
    this.digestCache = undefined;
  }

  /** Remove a file (not a directory). */
  unlink(p: string): void {
    if (this.lookup(p).kind === "dir") throw new VfsError("EISDIR", p);
    this.remove(p);
  }

  /** Remove an empty directory. */
  rmdir(p: string): void {
    if (this.lookup(p).kind !== "dir") throw new VfsError("ENOTDIR", p);
    this.remove(p);
  }

  /** Move a file or directory; an existing file at `to` is replaced. */
  rename(from: string, to: string): void {
    const src = splitPath(from, this.cwd);
    const dst = splitPath(to, this.cwd);
    const srcName = src.pop();
    const dstName = dst.pop();
    if (srcName === undefined || dstName === undefined) throw new VfsError("EBUSY", from);
    const srcDir = this.dirAt(src, from);
    const node = srcDir.children.get(srcName);
    if (!node) throw new VfsError("ENOENT", from);
    const full = [...src, srcName];
    if (node.kind === "dir" && dst.length >= full.length && full.every((s, i) => dst[i] === s)) throw new VfsError("EINVAL", to);
    const dstDir = this.dirAt(dst, to);
    const old = dstDir.children.get(dstName);
    if (old === node) return;
    if (old?.kind === "dir" && (node.kind !== "dir" || old.children.size > 0)) throw new VfsError(node.kind === "dir" ? "ENOTEMPTY" : "EISDIR", to);
    if (old && old.kind === "file" && node.kind === "dir") throw new VfsError("ENOTDIR", to);
    srcDir.children.delete(srcName);
    if (old) this.release(old);
    dstDir.children.set(dstName, node);
    this.digestCache = undefined;
  }

  /** SHA-256 over paths (code-point order), types and file contents; cached until a change. */
  digest(): string {
    if (this.digestCache) return this.digestCache;
    const h = createHash("sha256");
    const walk = (n: Node, p: string) => {
      if (n.kind === "file") {
        h.update(`f ${JSON.stringify(p)} ${createHash("sha256").update(n.data).digest("hex")}\n`);
        return;
      }
      h.update(`d ${JSON.stringify(p)}\n`);
      for (const name of [...n.children.keys()].sort(compareCodePoints)) walk(n.children.get(name)!, p === "/" ? `/${name}` : `${p}/${name}`);
    };
    walk(this.root, "/");
    this.digestCache = h.digest("hex");
    return this.digestCache;
  }

  private lookup(p: string): Node {
    let n: Node = this.root;
    for (const seg of splitPath(p, this.cwd)) {
      if (n.kind !== "dir") throw new VfsError("ENOTDIR", p);
      const next: Node | undefined = n.children.get(seg);
      if (!next) throw new VfsError("ENOENT", p);
      n = next;
    }
    return n;
  }

  private dirAt(parts: string[], p: string): DirNode {
    let n: Node = this.root;
    for (const seg of parts) {
      if (n.kind !== "dir") throw new VfsError("ENOTDIR", p);
      const next: Node | undefined = n.children.get(seg);
      if (!next) throw new VfsError("ENOENT", p);
      n = next;
    }
    if (n.kind !== "dir") throw new VfsError("ENOTDIR", p);
    return n;
  }

  private mkdirParts(parts: string[], p: string): DirNode {
    let n: DirNode = this.root;
    for (const seg of parts) {
      const next = n.children.get(seg);
      if (next?.kind === "file") throw new VfsError("ENOTDIR", p);
      if (next) {
        n = next;
        continue;
      }
      this.charge(p, 1, 0);
      const made: DirNode = { kind: "dir", children: new Map() };
      n.children.set(seg, made);
      this.usage.files += 1;
      this.digestCache = undefined;
      n = made;
    }
    return n;
  }

  private charge(p: string, files: number, bytes: number): void {
    if (files > 0 && this.usage.files + this.external.files + files > this.quota.vfsFiles) this.refuse("vfsFiles", p);
    if (bytes > 0 && this.usage.bytes + this.external.bytes + bytes > this.quota.vfsBytes) this.refuse("vfsBytes", p);
  }

  private release(n: Node): void {
    if (!this.free.has(n)) this.usage.files -= 1;
    if (n.kind === "file") this.usage.bytes -= n.data.length;
    else for (const c of n.children.values()) this.release(c);
  }

  private refuse(limit: "vfsBytes" | "vfsFiles", p: string): never {
    this.limitHit = limit;
    throw new VfsError(limit === "vfsBytes" ? "ENOSPC" : "EDQUOT", p, limit);
  }
}
