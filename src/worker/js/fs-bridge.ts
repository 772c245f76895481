// The sandbox's file system as both sides see it: the VFS tree (in-memory, with mounted host
// directories and the vfsBytes/vfsFiles quotas), the `fs` host function the prelude's fs module
// calls, and the host's own `fs` frames (write/read/list/... from Sandbox.files).
import type { QuickJSHandle } from "quickjs-emscripten-core";
import type { FsOp, HostMessage } from "../../protocol/messages.js";
import { MountedTree } from "../../vfs/mounted.js";
import { MemTree, VfsError } from "../../vfs/tree.js";
import { fatal } from "../common.js";
import type { GuestValues, HostFn } from "./values.js";

export const HOME = "/home/user";

type Configure = Extract<HostMessage, { type: "configure" }>;

export class FsBridge {
  tree: MountedTree = emptyTree();

  constructor(private readonly send: (message: unknown) => void) {}

  /**
   * A fresh tree for a configure (mount points are made before quotas apply: free, like /tmp and
   * the home directory). Throws if a mount's host directory cannot be opened.
   */
  configure(msg: Configure): void {
    const tree = new MemTree({ vfsBytes: msg.limits.vfsBytes, vfsFiles: msg.limits.vfsFiles }, ["/tmp", HOME, ...msg.mounts.map((m) => m.guestPath)], HOME);
    this.tree = new MountedTree(tree, msg.mounts, msg.limits.memoryBytes);
  }

  reset(): void {
    this.tree = emptyTree();
  }

  hostFunctions(v: GuestValues): Record<string, HostFn> {
    return { fs: (op, p, a, b) => this.guestOp(v, v.str(op, "op"), v.str(p, "path"), a, b) };
  }

  private guestOp(v: GuestValues, op: string, p: string, a: QuickJSHandle | undefined, b: QuickJSHandle | undefined): QuickJSHandle | void {
    const t = this.tree;
    const ctx = v.ctx;
    try {
      switch (op) {
        case "read":
          return v.arrayBuffer(t.readFile(p));
        case "readText":
          return ctx.newString(Buffer.from(t.readFile(p)).toString("utf8"));
        case "write":
        case "append":
          return t.writeFile(p, v.bytes(a), { append: op === "append" });
        case "list":
          return ctx.newString(JSON.stringify(t.list(p)));
        case "stat":
          return ctx.newString(JSON.stringify(t.stat(p)));
        case "exists":
          return t.exists(p) ? ctx.true : ctx.false;
        case "mkdir":
          return t.mkdir(p, Boolean(a && ctx.dump(a) === true));
        case "rm":
          return t.remove(p, Boolean(a && ctx.dump(a) === true));
        case "rmdir":
          return t.rmdir(p);
        case "unlink":
          return t.unlink(p);
        case "rename": {
          if ((!b || ctx.typeof(b) === "undefined") && a && ctx.typeof(a) === "string") return t.rename(p, ctx.getString(a));
          throw new VfsError("EINVAL", p);
        }
        default:
          throw new VfsError("EINVAL", p);
      }
    } catch (e) {
      if (e instanceof VfsError) throw ctx.newError({ name: "Error", message: `${e.code}: ${e.description}, '${p}'` });
      throw e;
    }
  }

  /** A host `fs` frame: answered with a `reply`; a VFS error is a failed reply, anything else fatal. */
  hostOp(id: number, op: FsOp, p: string, data: string | undefined, recursive: boolean | undefined): void {
    const t = this.tree;
    const send = this.send;
    try {
      if (!p.startsWith("/")) throw new VfsError("EINVAL", p);
      switch (op) {
        case "write":
          t.writeFile(p, Buffer.from(data ?? "", "base64"), { parents: true });
          return send({ type: "reply", id, ok: true });
        case "read":
          return send({ type: "reply", id, ok: true, data: Buffer.from(t.readFile(p)).toString("base64") });
        case "exists":
          return send({ type: "reply", id, ok: true, exists: t.exists(p) });
        case "mkdir":
          t.mkdir(p, true);
          return send({ type: "reply", id, ok: true });
        case "list":
          return send({ type: "reply", id, ok: true, entries: t.list(p) });
        case "remove":
          t.remove(p, recursive ?? true);
          return send({ type: "reply", id, ok: true });
      }
    } catch (e) {
      if (!(e instanceof VfsError)) return fatal(`file operation failed: ${String((e as Error)?.stack ?? e)}`);
      send({ type: "reply", id, ok: false, errno: e.code, message: e.description, ...(e.limit ? { limit: e.limit } : {}) });
    }
  }
}

function emptyTree(): MountedTree {
  return new MountedTree(new MemTree({ vfsBytes: Infinity, vfsFiles: Infinity }, ["/tmp", HOME], HOME), [], Infinity);
}
