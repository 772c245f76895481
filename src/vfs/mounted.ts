// The JavaScript tier's file system with host mounts: the in-memory tree (`tree.ts`) plus host
// directories granted by `mounts`, seen at their guest paths. Guest paths are resolved lexically
// first (`..` never climbs above `/`, so it cannot leave a mount by name); every host access then
// resolves the host path with realpath and checks it is inside the mount's real root, so a
// symlink (absolute, relative, or a linked directory on the way) cannot lead out either. New
// entries are created below a contained real parent with O_NOFOLLOW; the guest cannot create
// symlinks at all. Read-only mounts refuse every mutation with EROFS. What the guest adds to a
// read-write mount is charged to the tree's vfsBytes/vfsFiles quotas before the host write.
import fs from "node:fs";
import path from "node:path";
import { compareCodePoints } from "./memfs.js";
import { MemTree, splitPath, VfsError, type TreeEntry, type VfsErrorCode } from "./tree.js";

export interface HostMount {
  /** Absolute guest path (normalised). */
  guestPath: string;
  /** Host directory; resolved with realpath when the table is built. */
  hostPath: string;
  readOnly: boolean;
}

interface Mount {
  guest: string[];
  guestPath: string;
  root: string;
  readOnly: boolean;
}

/** Node's error codes mapped onto the VFS's; anything the permission model refuses is EACCES. */
function vfsError(e: unknown, p: string): VfsError {
  if (e instanceof VfsError) return e;
  const code = (e as NodeJS.ErrnoException)?.code ?? "";
  const map: Record<string, VfsErrorCode> = {
    ENOENT: "ENOENT",
    EEXIST: "EEXIST",
    ENOTDIR: "ENOTDIR",
    EISDIR: "EISDIR",
    ENOTEMPTY: "ENOTEMPTY",
    EACCES: "EACCES",
    EPERM: "EACCES",
    ERR_ACCESS_DENIED: "EACCES",
    ELOOP: "EACCES",
    EROFS: "EROFS",
    EXDEV: "EXDEV",
    ENOSPC: "EIO",
  };
  return new VfsError(map[code] ?? "EIO", p);
}

export class MountedTree {
  private readonly mounts: Mount[];

  /** `maxReadBytes`: host files larger than this are refused (they could not fit in the guest). */
  constructor(
    readonly tree: MemTree,
    mounts: HostMount[],
    private readonly maxReadBytes: number,
  ) {
    this.mounts = mounts
      .map((m) => ({ guest: splitPath(m.guestPath), guestPath: m.guestPath, root: fs.realpathSync(m.hostPath), readOnly: m.readOnly }))
      .sort((a, b) => b.guest.length - a.guest.length); // the deepest mount wins
  }

  takeLimitHit(): "vfsBytes" | "vfsFiles" | undefined {
    return this.tree.takeLimitHit();
  }

  /** The digest of the in-memory tree; mount points are listed, not descended (as for Python). */
  digest(): string {
    return this.tree.digest();
  }

  readFile(p: string): Uint8Array {
    const at = this.route(p);
    if (!at) return this.tree.readFile(p);
    return this.host(p, () => {
      const real = this.existing(at, p);
      const st = fs.statSync(real);
      if (st.isDirectory()) throw new VfsError("EISDIR", p);
      if (st.size > this.maxReadBytes) throw new VfsError("EFBIG", p);
      return new Uint8Array(fs.readFileSync(real));
    });
  }

  writeFile(p: string, data: Uint8Array, opts: { append?: boolean; parents?: boolean } = {}): void {
    const at = this.route(p);
    if (!at) {
      this.tree.writeFile(p, data, opts);
      return;
    }
    this.writable(at, p);
    if (at.rel.length === 0) throw new VfsError("EISDIR", p);
    this.host(p, () => {
      const name = at.rel[at.rel.length - 1]!;
      if (opts.parents) this.mkdirHost(at, at.rel.slice(0, -1), p, true);
      const parent = this.realDir(at, at.rel.slice(0, -1), p);
      let target = path.join(parent, name);
      let old = -1; // -1: a new file
      const lst = lstatOrUndefined(target);
      if (lst?.isSymbolicLink()) target = this.contained(at.mount, fs.realpathSync(target), p);
      const st = lst ? fs.statSync(target) : undefined;
      if (st?.isDirectory()) throw new VfsError("EISDIR", p);
      if (st) old = st.size;
      const growth = opts.append ? data.length : data.length - Math.max(0, old);
      this.tree.chargeExternal(Math.max(0, growth), old < 0 ? 1 : 0, p);
      const flags = (opts.append ? fs.constants.O_APPEND : fs.constants.O_TRUNC) | fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
      let fd: number;
      try {
        fd = fs.openSync(target, flags, 0o644);
      } catch (e) {
        this.tree.chargeExternal(-Math.max(0, growth), old < 0 ? -1 : 0, p);
        throw e;
      }
      try {
        fs.writeSync(fd, data);
      } finally {
        fs.closeSync(fd);
      }
      if (growth < 0) this.tree.chargeExternal(growth, 0, p);
    });
  }

  mkdir(p: string, recursive = false): void {
    const at = this.route(p);
    if (!at) {
      this.tree.mkdir(p, recursive);
      return;
    }
    this.writable(at, p);
    this.host(p, () => this.mkdirHost(at, at.rel, p, recursive, true));
  }

  exists(p: string): boolean {
    const at = this.route(p);
    if (!at) return this.tree.exists(p);
    try {
      this.host(p, () => this.existing(at, p));
      return true;
    } catch (e) {
      if (e instanceof VfsError && e.code !== "EINVAL") return false;
      throw e;
    }
  }

  /** Type and size, following links (inside the mount only). */
  stat(p: string): { type: "file" | "dir"; size: number } {
    const at = this.route(p);
    if (!at) return this.tree.stat(p);
    return this.host(p, () => {
      const st = fs.statSync(this.existing(at, p));
      return st.isDirectory() ? { type: "dir", size: 0 } : { type: "file", size: st.size };
    });
  }

  list(p: string): TreeEntry[] {
    const at = this.route(p);
    if (!at) return this.tree.list(p);
    return this.host(p, () => {
      const real = this.existing(at, p);
      const base = this.tree.resolve(p);
      return fs
        .readdirSync(real)
        .sort(compareCodePoints)
        .map((name) => {
          const st = fs.lstatSync(path.join(real, name));
          const type = st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "dir" : "file";
          return { name, path: base === "/" ? `/${name}` : `${base}/${name}`, type, size: type === "file" ? st.size : 0 };
        });
    });
  }

  remove(p: string, recursive = false): void {
    const at = this.route(p);
    if (!at) {
      this.assertNoMountBelow(p);
      this.tree.remove(p, recursive);
      return;
    }
    this.writable(at, p);
    if (at.rel.length === 0) throw new VfsError("EBUSY", p);
    this.host(p, () => {
      const target = path.join(this.realDir(at, at.rel.slice(0, -1), p), at.rel[at.rel.length - 1]!);
      const st = fs.lstatSync(target);
      if (st.isDirectory() && !recursive && fs.readdirSync(target).length > 0) throw new VfsError("ENOTEMPTY", p);
      const freed = usageOf(target);
      fs.rmSync(target, { recursive: true });
      this.tree.chargeExternal(-freed.bytes, -freed.files, p);
    });
  }

  unlink(p: string): void {
    if (this.lstatType(p) === "dir") throw new VfsError("EISDIR", p);
    this.remove(p);
  }

  rmdir(p: string): void {
    if (this.lstatType(p) !== "dir") throw new VfsError("ENOTDIR", p);
    this.remove(p);
  }

  rename(from: string, to: string): void {
    const a = this.route(from);
    const b = this.route(to);
    if (!a && !b) {
      this.assertNoMountBelow(from);
      this.tree.rename(from, to);
      return;
    }
    if (!a || !b || a.mount !== b.mount) throw new VfsError("EXDEV", to);
    this.writable(a, from);
    if (a.rel.length === 0 || b.rel.length === 0) throw new VfsError("EBUSY", a.rel.length === 0 ? from : to);
    this.host(from, () => {
      const src = path.join(this.realDir(a, a.rel.slice(0, -1), from), a.rel[a.rel.length - 1]!);
      const dst = path.join(this.realDir(b, b.rel.slice(0, -1), to), b.rel[b.rel.length - 1]!);
      fs.lstatSync(src);
      const replaced = lstatOrUndefined(dst);
      fs.renameSync(src, dst);
      if (replaced && !replaced.isDirectory()) this.tree.chargeExternal(-(replaced.isFile() ? replaced.size : 0), -1, to);
    });
  }

  /** The mount `p` lies in (at or below its guest path), with the path parts below it. */
  private route(p: string): { mount: Mount; rel: string[] } | undefined {
    const parts = splitPath(p, this.tree.cwd);
    for (const m of this.mounts) {
      if (parts.length >= m.guest.length && m.guest.every((s, i) => parts[i] === s)) return { mount: m, rel: parts.slice(m.guest.length) };
    }
    return undefined;
  }

  /** A tree operation on an ancestor of a mount point would detach the mount: refused. */
  private assertNoMountBelow(p: string): void {
    const parts = splitPath(p, this.tree.cwd);
    if (this.mounts.some((m) => m.guest.length >= parts.length && parts.every((s, i) => m.guest[i] === s))) throw new VfsError("EBUSY", p);
  }

  private writable(at: { mount: Mount }, p: string): void {
    if (at.mount.readOnly) throw new VfsError("EROFS", p);
  }

  /** Run a host operation; Node's errors become VfsErrors naming the guest path. */
  private host<T>(p: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw vfsError(e, p);
    }
  }

  private contained(m: Mount, real: string, p: string): string {
    if (real === m.root || real.startsWith(m.root + path.sep)) return real;
    throw new VfsError("EACCES", p);
  }

  /** The real host path of an existing entry, links followed, inside the mount. */
  private existing(at: { mount: Mount; rel: string[] }, p: string): string {
    return this.contained(at.mount, fs.realpathSync(path.join(at.mount.root, ...at.rel)), p);
  }

  /** The real host path of an existing directory `rel` inside the mount. */
  private realDir(at: { mount: Mount }, rel: string[], p: string): string {
    const real = this.contained(at.mount, fs.realpathSync(path.join(at.mount.root, ...rel)), p);
    if (!fs.statSync(real).isDirectory()) throw new VfsError("ENOTDIR", p);
    return real;
  }

  private lstatType(p: string): "file" | "dir" | "symlink" {
    const at = this.route(p);
    if (!at) return this.tree.stat(p).type;
    if (at.rel.length === 0) return "dir";
    return this.host(p, () => {
      const st = fs.lstatSync(path.join(this.realDir(at, at.rel.slice(0, -1), p), at.rel[at.rel.length - 1]!));
      return st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "dir" : "file";
    });
  }

  /**
   * Make directory `rel` (and with `recursive` its parents), one contained step at a time.
   * `target`: `rel` is the directory asked for (a non-directory there is EEXIST, as `mkdir -p`
   * says), not the parents of a file being written (ENOTDIR).
   */
  private mkdirHost(at: { mount: Mount }, rel: string[], p: string, recursive: boolean, target = false): void {
    let dir = at.mount.root;
    for (let i = 0; i < rel.length; i++) {
      const next = path.join(dir, rel[i]!);
      const st = lstatOrUndefined(next);
      const last = i === rel.length - 1;
      if (st) {
        if (last && !recursive) throw new VfsError("EEXIST", p);
        dir = this.contained(at.mount, fs.realpathSync(next), p);
        if (!fs.statSync(dir).isDirectory()) throw new VfsError(last && target ? "EEXIST" : "ENOTDIR", p);
        continue;
      }
      if (!last && !recursive) throw new VfsError("ENOENT", p);
      this.tree.chargeExternal(0, 1, p);
      try {
        fs.mkdirSync(next, 0o755);
      } catch (e) {
        this.tree.chargeExternal(0, -1, p);
        throw e;
      }
      dir = next;
    }
  }
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

/** Bytes of regular files and number of entries at and below `p` (links not followed). */
function usageOf(p: string): { bytes: number; files: number } {
  const st = fs.lstatSync(p);
  const total = { bytes: st.isFile() ? st.size : 0, files: 1 };
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(p)) {
      const u = usageOf(path.join(p, name));
      total.bytes += u.bytes;
      total.files += u.files;
    }
  }
  return total;
}
