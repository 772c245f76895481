// The Python sandbox's file system as the host sees it: Emscripten's MEMFS with its quota
// accounting (vfs/memfs.ts), host directories mounted through NODEFS (read-only mounts refuse
// every mutation; what the guest adds to a read-write mount is charged to the same quotas), and
// the host's own `fs` frames (write/read/list/... from Sandbox.files).
import fs from "node:fs";
import path from "node:path";
import type { FsOp, WorkerMount } from "../../protocol/messages.js";
import { compareCodePoints, ERRNO, errnoName, MemfsAccounting, QUOTA_MARK } from "../../vfs/memfs.js";
import { fatal } from "../common.js";
import type { Pyodide } from "./pyodide.js";

export class FsBridge {
  readonly accounting: MemfsAccounting;

  constructor(
    private readonly py: Pyodide,
    private readonly send: (message: unknown) => void,
  ) {
    // No quota until configured: mount points and the home directory are made first.
    this.accounting = new MemfsAccounting(py.FS, { vfsBytes: Infinity, vfsFiles: Infinity });
    this.accounting.install();
  }

  /** Mount a host directory (NODEFS, guarded: read-only refusals, quota accounting). */
  mount(m: WorkerMount): void {
    const FS = this.py.FS as unknown as Record<string, unknown> & Pyodide["FS"];
    FS.mkdirTree(m.guestPath);
    const NODEFS = (FS.filesystems as unknown as Record<string, NodeFsOps>).NODEFS!;
    guardNodefs(NODEFS, FS.ErrnoError, this.accounting);
    FS.mount(NODEFS, { root: m.hostPath, readOnly: m.readOnly }, m.guestPath);
  }

  /** A host `fs` frame: answered with a `reply`; an errno is a failed reply, anything else fatal. */
  hostOp(id: number, op: FsOp, p: string, data: string | undefined, recursive: boolean | undefined): void {
    const send = this.send;
    const FS = this.py.FS;
    try {
      if (!p.startsWith("/") || p.includes("\0")) throw new FS.ErrnoError(ERRNO.EINVAL);
      switch (op) {
        case "write": {
          const dir = path.posix.dirname(p);
          if (dir !== "/") FS.mkdirTree(dir);
          FS.writeFile(p, Buffer.from(data ?? "", "base64"));
          return send({ type: "reply", id, ok: true });
        }
        case "read":
          return send({ type: "reply", id, ok: true, data: Buffer.from(FS.readFile(p)).toString("base64") });
        case "exists":
          return send({ type: "reply", id, ok: true, exists: FS.analyzePath(p).exists });
        case "mkdir":
          // mkdirTree ignores EEXIST even for a file; like `mkdir -p`, only a directory may be there.
          FS.mkdirTree(p);
          if (!FS.isDir(FS.stat(p).mode)) throw new FS.ErrnoError(ERRNO.EEXIST);
          return send({ type: "reply", id, ok: true });
        case "list": {
          const names = FS.readdir(p).filter((n) => n !== "." && n !== "..").sort(compareCodePoints);
          const entries = names.map((name) => {
            const full = p === "/" ? `/${name}` : `${p}/${name}`;
            const st = FS.lstat(full);
            const type = FS.isDir(st.mode) ? "dir" : FS.isLink(st.mode) ? "symlink" : "file";
            return { name, path: full, type, size: type === "file" ? st.size : 0 };
          });
          return send({ type: "reply", id, ok: true, entries });
        }
        case "remove":
          removeTree(FS, p, recursive ?? true);
          return send({ type: "reply", id, ok: true });
      }
    } catch (e) {
      const err = e as { errno?: number; message?: string } & Record<symbol, unknown>;
      const limit = err[QUOTA_MARK] as "vfsBytes" | "vfsFiles" | undefined;
      if (err.errno === undefined) return fatal(`file operation failed: ${String((e as Error)?.stack ?? e)}`);
      send({ type: "reply", id, ok: false, errno: errnoName(err.errno), message: describeErrno(err.errno), ...(limit ? { limit } : {}) });
    }
  }
}

export function removeTree(FS: Pyodide["FS"], p: string, recursive: boolean): void {
  const st = FS.lstat(p);
  if (!FS.isDir(st.mode)) return FS.unlink(p);
  if (recursive) {
    for (const name of FS.readdir(p)) if (name !== "." && name !== "..") removeTree(FS, `${p}/${name}`, true);
  }
  FS.rmdir(p);
}

export function describeErrno(errno: number): string {
  const name = errnoName(errno);
  const text: Record<string, string> = {
    ENOENT: "no such file or directory",
    EEXIST: "file exists",
    ENOTDIR: "not a directory",
    EISDIR: "is a directory",
    ENOTEMPTY: "directory not empty",
    ENOSPC: "file system byte quota reached",
    EDQUOT: "file system file-count quota reached",
    EROFS: "read-only file system",
    EINVAL: "invalid path",
  };
  return text[name] ?? `file system error ${name}`;
}

// Mounts. Read-only: NODEFS knows nothing of them, so every mutating operation is refused up
// front. Read-write: the host directory's net growth is charged to the sandbox's VFS quota.
export interface NodeFsOps {
  node_ops: Record<string, (...a: unknown[]) => unknown>;
  stream_ops: Record<string, (...a: unknown[]) => unknown>;
  realPath(node: unknown): string;
  guarded?: boolean;
}
interface NodeFsNode {
  mode: number;
  mount?: { opts?: { readOnly?: boolean } };
}
interface NodeFsStream {
  node: NodeFsNode;
  flags: number;
  nfd?: number;
}
const O_ACCMODE = 3;
const O_CREAT = 64;
const O_TRUNC = 512;
const O_APPEND = 1024;

type Op = (...a: unknown[]) => unknown;

export function guardNodefs(NODEFS: NodeFsOps, ErrnoError: new (n: number) => Error, meter: MemfsAccounting): void {
  if (NODEFS.guarded) return;
  NODEFS.guarded = true;
  const ro = (node: unknown) => Boolean((node as NodeFsNode).mount?.opts?.readOnly);
  /** Size of a host path, 0 when absent or not a regular file. */
  const sizeAt = (p: string) => {
    try {
      const st = fs.lstatSync(p);
      return st.isFile() ? st.size : 0;
    } catch {
      return 0;
    }
  };
  const child = (parent: unknown, name: unknown) => path.join(NODEFS.realPath(parent), String(name));
  const wrap = (table: Record<string, Op>, op: string, f: (orig: Op, ...a: unknown[]) => unknown) => {
    const orig = table[op]!;
    table[op] = (...a: unknown[]) => f(orig, ...a);
  };
  const { node_ops: nodeOps, stream_ops: streamOps } = NODEFS;

  // Accounting first, so the read-only check below wraps it and runs before it.
  wrap(nodeOps, "mknod", (orig, ...a) => {
    meter.chargeExternal(0, 1);
    try {
      return orig(...a);
    } catch (e) {
      meter.chargeExternal(0, -1);
      throw e;
    }
  });
  wrap(nodeOps, "unlink", (orig, parent, name) => {
    const size = sizeAt(child(parent, name));
    const r = orig(parent, name);
    meter.chargeExternal(-size, -1);
    return r;
  });
  wrap(nodeOps, "rmdir", (orig, parent, name) => {
    const r = orig(parent, name);
    meter.chargeExternal(0, -1);
    return r;
  });
  wrap(nodeOps, "rename", (orig, node, newDir, newName) => {
    const target = child(newDir, newName);
    const replaced = fs.existsSync(target) ? sizeAt(target) : -1;
    const r = orig(node, newDir, newName);
    if (replaced >= 0) meter.chargeExternal(-replaced, -1);
    return r;
  });
  const resize = (orig: Op, before: number, size: number, ...a: unknown[]) => {
    if (size > before) meter.chargeExternal(size - before, 0);
    const r = orig(...a);
    if (size < before) meter.chargeExternal(size - before, 0);
    return r;
  };
  wrap(nodeOps, "setattr", (orig, node, attr) => {
    const size = (attr as { size?: number }).size;
    if (size === undefined) return orig(node, attr);
    return resize(orig, sizeAt(NODEFS.realPath(node)), size, node, attr);
  });
  wrap(streamOps, "setattr", (orig, stream, attr) => {
    const s = stream as NodeFsStream;
    const size = (attr as { size?: number }).size;
    if (size === undefined || s.nfd === undefined) return orig(stream, attr);
    if (ro(s.node)) throw new ErrnoError(ERRNO.EROFS);
    return resize(orig, fs.fstatSync(s.nfd).size, size, stream, attr);
  });
  wrap(streamOps, "open", (orig, stream) => {
    const s = stream as NodeFsStream;
    const truncated = s.flags & O_TRUNC ? sizeAt(NODEFS.realPath(s.node)) : 0;
    const r = orig(stream);
    if (truncated > 0) meter.chargeExternal(-truncated, 0);
    return r;
  });
  wrap(streamOps, "write", (orig, stream, buffer, offset, length, position) => {
    const s = stream as NodeFsStream;
    const size = s.nfd !== undefined ? fs.fstatSync(s.nfd).size : 0;
    const growth = Math.max(0, Number(position) + Number(length) - size);
    if (growth > 0) meter.chargeExternal(growth, 0);
    return orig(stream, buffer, offset, length, position);
  });

  // Read-only mounts refuse every mutation; no mount gets symlinks planted in host directories.
  for (const op of ["setattr", "mknod", "rename", "unlink", "rmdir", "symlink"]) {
    wrap(nodeOps, op, (orig, ...a) => {
      if (ro(a[0])) throw new ErrnoError(ERRNO.EROFS);
      if (op === "symlink") throw new ErrnoError(ERRNO.EPERM);
      return orig(...a);
    });
  }
  wrap(streamOps, "open", (orig, stream) => {
    const s = stream as NodeFsStream;
    if (ro(s.node) && (s.flags & O_ACCMODE || s.flags & (O_CREAT | O_TRUNC | O_APPEND))) throw new ErrnoError(ERRNO.EROFS);
    return orig(stream);
  });
  wrap(streamOps, "write", (orig, stream, ...a) => {
    if (ro((stream as NodeFsStream).node)) throw new ErrnoError(ERRNO.EROFS);
    return orig(stream, ...a);
  });
}
