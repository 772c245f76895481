// The sandbox's in-memory file system: quotas, stable listings and a content digest layered over
// Emscripten's MEMFS (the file system CPython-in-Wasm already uses). Every write path of MEMFS
// (write, msync, truncate, node creation, unlink, rename) is wrapped, so the guest and the host
// hit the same quota, enforced at the moment of the write, not checked afterwards.
import { createHash } from "node:crypto";

/** Emscripten's errno numbers (WASI numbering), the ones this module raises or maps. */
export const ERRNO = {
  EACCES: 2,
  EEXIST: 20,
  EINVAL: 28,
  EISDIR: 31,
  ENOENT: 44,
  ENOSPC: 51,
  ENOTDIR: 54,
  ENOTEMPTY: 55,
  EPERM: 63,
  EROFS: 69,
  EDQUOT: 19,
} as const;

const ERRNO_NAMES = new Map<number, string>(Object.entries(ERRNO).map(([k, v]) => [v, k]));
export function errnoName(errno: number | undefined): string {
  return (errno !== undefined && ERRNO_NAMES.get(errno)) || "EIO";
}

/** The slice of an Emscripten MEMFS node this module touches. */
export interface EmNode {
  name: string;
  mode: number;
  parent: EmNode;
  mount: { mountpoint: string };
  mounted: unknown;
  contents?: Record<string, EmNode> | ArrayBufferView | null;
  usedBytes?: number;
  link?: string;
}

interface EmStream {
  node: EmNode;
}

type WriteFn = (stream: EmStream, buffer: Uint8Array, offset: number, length: number, position: number, canOwn?: boolean) => number;

/** The slice of Emscripten's FS object this module touches. */
export interface EmFs {
  root: EmNode;
  ErrnoError: new (errno: number) => Error & { errno: number };
  isDir(mode: number): boolean;
  isFile(mode: number): boolean;
  isLink(mode: number): boolean;
  filesystems: {
    MEMFS: {
      createNode: (parent: EmNode | null, name: string, mode: number, dev: number) => EmNode;
      stream_ops: { write: WriteFn };
      ops_table: {
        file: { node: { setattr: (node: EmNode, attr: { size?: number }) => void }; stream: { write: WriteFn } };
        dir: {
          node: {
            unlink: (parent: EmNode, name: string) => void;
            rmdir: (parent: EmNode, name: string) => void;
            rename: (node: EmNode, newDir: EmNode, newName: string) => void;
          };
        };
      } | null;
    };
  };
}

export interface VfsQuota {
  vfsBytes: number;
  vfsFiles: number;
}

export interface VfsUsage {
  bytes: number;
  files: number;
}

/** Raised (as an Emscripten ErrnoError with this marker) when a quota stops a write. */
export const QUOTA_MARK = Symbol.for("agentbox.vfsQuota");

const SKIP_DIGEST = new Set(["/dev", "/proc"]);

/**
 * Accounting over one MEMFS instance. Files that exist when `install` runs (the standard library,
 * /dev, ...) are the baseline: they cost nothing until they grow past their baseline size. Every
 * node created afterwards costs one file and its size in bytes.
 */
export class MemfsAccounting {
  private readonly base = new WeakMap<EmNode, number>();
  private readonly dirty = new WeakSet<EmNode>();
  private usage: VfsUsage = { bytes: 0, files: 0 };
  /** Net growth of read-write host mounts (see chargeExternal), never below zero. */
  private external: VfsUsage = { bytes: 0, files: 0 };
  private generation = 0;
  private digestCache: { generation: number; digest: string } | undefined;
  /** Set when a quota refused a write since the last `takeLimitHit()`. */
  private limitHit: "vfsBytes" | "vfsFiles" | undefined;

  constructor(
    private readonly fs: EmFs,
    public quota: VfsQuota,
  ) {}

  /** Mark the current tree as baseline and wrap MEMFS's mutating operations. Call once. */
  install(): void {
    const { fs } = this;
    const memfs = fs.filesystems.MEMFS;
    const table = memfs.ops_table;
    if (!table) throw new Error("MEMFS is not initialised");
    this.walk(fs.root, "/", (node) => this.base.set(node, fs.isFile(node.mode) ? (node.usedBytes ?? 0) : 0));

    const createNode = memfs.createNode.bind(memfs);
    memfs.createNode = (parent, name, mode, dev) => {
      if (parent && this.totalFiles() + 1 > this.quota.vfsFiles) this.refuse("vfsFiles");
      const node = createNode(parent, name, mode, dev);
      if (parent) {
        this.usage.files += 1;
        this.generation++;
      }
      return node;
    };

    const write = memfs.stream_ops.write;
    const countedWrite: WriteFn = (stream, buffer, offset, length, position, canOwn) => {
      const node = stream.node;
      const before = this.charge(node);
      const after = Math.max(0, Math.max(node.usedBytes ?? 0, position + length) - (this.base.get(node) ?? 0));
      if (after > before && this.totalBytes() + (after - before) > this.quota.vfsBytes) this.refuse("vfsBytes");
      const n = write(stream, buffer, offset, length, position, canOwn);
      this.usage.bytes += this.charge(node) - before;
      this.touch(node);
      return n;
    };
    memfs.stream_ops.write = countedWrite;
    table.file.stream.write = countedWrite;

    const setattr = table.file.node.setattr;
    table.file.node.setattr = (node, attr) => {
      if (attr.size !== undefined && fs.isFile(node.mode)) {
        const before = this.charge(node);
        const after = Math.max(0, attr.size - (this.base.get(node) ?? 0));
        if (after > before && this.totalBytes() + (after - before) > this.quota.vfsBytes) this.refuse("vfsBytes");
        setattr(node, attr);
        this.usage.bytes += this.charge(node) - before;
        this.touch(node);
        return;
      }
      setattr(node, attr);
    };

    const dirOps = table.dir.node;
    const unlink = dirOps.unlink;
    dirOps.unlink = (parent, name) => {
      const node = (parent.contents as Record<string, EmNode>)[name];
      unlink(parent, name);
      if (node) this.release(node);
    };
    const rmdir = dirOps.rmdir;
    dirOps.rmdir = (parent, name) => {
      const node = (parent.contents as Record<string, EmNode>)[name];
      rmdir(parent, name);
      if (node) this.release(node);
    };
    const rename = dirOps.rename;
    dirOps.rename = (node, newDir, newName) => {
      const replaced = (newDir.contents as Record<string, EmNode> | undefined)?.[newName];
      rename(node, newDir, newName);
      if (replaced && replaced !== node) this.release(replaced);
      this.generation++;
    };
  }

  getUsage(): VfsUsage {
    return { bytes: this.totalBytes(), files: this.totalFiles() };
  }

  /**
   * Count growth that happens outside MEMFS — writes through a read-write host mount — against
   * the same quota. Positive amounts are refused (ErrnoError with QUOTA_MARK) when they do not
   * fit; negative amounts (deletes, truncation) give room back, down to zero.
   */
  chargeExternal(bytes: number, files: number): void {
    if (bytes > 0 && this.totalBytes() + bytes > this.quota.vfsBytes) this.refuse("vfsBytes");
    if (files > 0 && this.totalFiles() + files > this.quota.vfsFiles) this.refuse("vfsFiles");
    this.external = { bytes: Math.max(0, this.external.bytes + bytes), files: Math.max(0, this.external.files + files) };
  }

  private totalBytes(): number {
    return this.usage.bytes + this.external.bytes;
  }

  private totalFiles(): number {
    return this.usage.files + this.external.files;
  }

  /** Which quota refused a write since the last call, if any. */
  takeLimitHit(): "vfsBytes" | "vfsFiles" | undefined {
    const hit = this.limitHit;
    this.limitHit = undefined;
    return hit;
  }

  /**
   * SHA-256 over the tree (paths in code-point order, type, permission bits, file contents;
   * never timestamps), cached until the next mutation. Mount points are listed, not descended.
   */
  digest(): string {
    if (this.digestCache?.generation === this.generation) return this.digestCache.digest;
    const h = createHash("sha256");
    this.walk(this.fs.root, "/", (node, path) => {
      const perm = (node.mode & 0o7777).toString(8);
      if (this.fs.isFile(node.mode)) {
        const base = this.base.has(node) && !this.dirty.has(node);
        const c = node.contents;
        // MEMFS keeps file data in whatever typed array it was given (Int8Array from the heap, ...).
        const body = ArrayBuffer.isView(c) ? new Uint8Array(c.buffer, c.byteOffset, Math.min(c.byteLength, node.usedBytes ?? 0)) : new Uint8Array(0);
        const content = base ? `base:${body.length}` : createHash("sha256").update(body).digest("hex");
        h.update(`f ${JSON.stringify(path)} ${perm} ${content}\n`);
      } else if (this.fs.isLink(node.mode)) {
        h.update(`l ${JSON.stringify(path)} ${JSON.stringify(node.link ?? "")}\n`);
      } else if (this.fs.isDir(node.mode)) {
        h.update(`d ${JSON.stringify(path)} ${perm}${node.mounted ? " mount" : ""}\n`);
      }
    });
    const digest = h.digest("hex");
    this.digestCache = { generation: this.generation, digest };
    return digest;
  }

  private charge(node: EmNode): number {
    if (!this.fs.isFile(node.mode)) return 0;
    return Math.max(0, (node.usedBytes ?? 0) - (this.base.get(node) ?? 0));
  }

  private touch(node: EmNode): void {
    this.dirty.add(node);
    this.generation++;
  }

  private release(node: EmNode): void {
    this.usage.bytes -= this.charge(node);
    if (!this.base.has(node)) this.usage.files -= 1;
    // A released subtree (rename over a directory) has no children: MEMFS refuses non-empty ones.
    this.generation++;
  }

  private refuse(limit: "vfsBytes" | "vfsFiles"): never {
    this.limitHit = limit;
    const err = new this.fs.ErrnoError(limit === "vfsBytes" ? ERRNO.ENOSPC : ERRNO.EDQUOT);
    (err as unknown as Record<symbol, string>)[QUOTA_MARK] = limit;
    throw err;
  }

  /** Depth-first walk of MEMFS directories in code-point order, skipping /dev, /proc and mounts. */
  private walk(node: EmNode, path: string, visit: (node: EmNode, path: string) => void): void {
    if (SKIP_DIGEST.has(path)) return;
    visit(node, path);
    if (!this.fs.isDir(node.mode) || node.mounted || !node.contents || ArrayBuffer.isView(node.contents)) return;
    const children = node.contents;
    for (const name of Object.keys(children).sort(compareCodePoints)) {
      this.walk(children[name]!, path === "/" ? `/${name}` : `${path}/${name}`, visit);
    }
  }
}

/** Code-point order (not locale order): the same on every machine. */
export function compareCodePoints(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
