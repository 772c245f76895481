// envd's filesystem service (filesystem.Filesystem) over Connect, and its /files upload and download,
// on the sandbox's files API (both tiers). What agentbox's files API does not know is filled in
// plainly: no owner, mode or modification time is kept, so entries carry envd's defaults for a
// sandbox user's files (owner/group "user", 0644 files, 0755 directories) and no modifiedTime;
// watching is a poll of the directory listing every WATCH_POLL_MS, diffed (a file rewritten with
// the same size is not seen).
import { randomUUID } from "node:crypto";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import type { Context, Hono } from "hono";
import { z } from "zod";
import { FileSystemQuotaError, InvalidOptionsError, type Sandbox } from "../../index.js";
import { normalizeGuestPath } from "../../policy/options.js";
import type { Entry } from "../registry.js";
import { ConnectError, keepaliveMs, readCapped, serverStream, toConnectError, unary, type ConnectCode, type RpcOptions } from "./connect.js";
import type { E2bOptions, SandboxEnv } from "./index.js";

const SERVICE = "filesystem.Filesystem";
/** How often a watcher lists its directory. */
export const WATCH_POLL_MS = 200;
/** Watchers (streams and polled ones) one sandbox may have at once. */
export const MAX_WATCHERS_PER_SANDBOX = 8;
/** Most entries one ListDir answers or one watcher follows. */
const MAX_LIST_ENTRIES = 50_000;
const MAX_WATCH_ENTRIES = 10_000;
/** Most events a polled watcher keeps between two GetWatcherEvents (older ones are dropped). */
const MAX_PENDING_EVENTS = 10_000;
/** A polled watcher nobody asked for events for this long is removed. */
const WATCHER_IDLE_MS = 120_000;
/** Most files in one multipart upload. */
const MAX_UPLOAD_PARTS = 1000;

type FileType = "file" | "dir" | "symlink";

const FILE_TYPE: Record<FileType, string> = { file: "FILE_TYPE_FILE", dir: "FILE_TYPE_DIRECTORY", symlink: "FILE_TYPE_SYMLINK" };
/** Go's os.ModeDir / os.ModeSymlink bits, which envd's `mode` carries. */
const MODE_DIR = 0x80000000;
const MODE_SYMLINK = 0x08000000;

/** EntryInfo as protobuf's JSON mapping writes it (int64 size as a string, enum by name). */
export function entryInfo(p: string, type: FileType, size: number): Record<string, unknown> {
  const perm = type === "dir" ? 0o755 : type === "symlink" ? 0o777 : 0o644;
  const rwx = (n: number) => (n & 4 ? "r" : "-") + (n & 2 ? "w" : "-") + (n & 1 ? "x" : "-");
  return {
    name: p === "/" ? "/" : path.posix.basename(p),
    type: FILE_TYPE[type],
    path: p,
    size: String(type === "dir" ? 0 : size),
    mode: (perm | (type === "dir" ? MODE_DIR : type === "symlink" ? MODE_SYMLINK : 0)) >>> 0,
    permissions: (type === "dir" ? "d" : type === "symlink" ? "L" : "-") + rwx(perm >> 6) + rwx((perm >> 3) & 7) + rwx(perm & 7),
    owner: "user",
    group: "user",
  };
}

// ---- Paths and users.

const userSchema = z.enum(["user", "root"]);

/** The user a request acts as: `?username=` or Connect's `Authorization: Basic base64(user:)`; "user" by default. */
function userOf(c: Context<SandboxEnv>, query?: string | null): "user" | "root" {
  let name: string | undefined = query ?? undefined;
  if (name === undefined) {
    const basic = /^Basic\s+([A-Za-z0-9+/=]{1,512})\s*$/i.exec(c.req.header("authorization") ?? "")?.[1];
    if (basic) name = Buffer.from(basic, "base64").toString("utf8").split(":")[0];
  }
  if (name === undefined || name === "") return "user";
  const r = userSchema.safeParse(name);
  if (!r.success) throw new ConnectError("invalid_argument", `unknown user ${JSON.stringify(name.slice(0, 64))} (this sandbox has "user" and "root")`);
  return r.data;
}

/** A request's path as envd resolves it: `~` and relative paths against the user's home, then the guest-path rules. */
export function resolvePath(raw: unknown, user: "user" | "root", field = "path"): string {
  if (typeof raw !== "string") throw new ConnectError("invalid_argument", `${field} must be a string`);
  if (raw.length > 4096) throw new ConnectError("invalid_argument", `${field} is longer than 4096 characters`);
  const home = user === "root" ? "/root" : "/home/user";
  let p = raw;
  if (p === "~" || p.startsWith("~/")) p = home + p.slice(1);
  else if (!p.startsWith("/")) p = p === "" ? home : `${home}/${p}`;
  try {
    return normalizeGuestPath(p, field);
  } catch (e) {
    if (e instanceof InvalidOptionsError) throw new ConnectError("invalid_argument", e.message);
    throw e;
  }
}

// ---- Stat and listing through the files API.

interface Node {
  type: FileType;
  size: number;
}

/** A listing's names that are one path segment (the listing comes from a worker that runs guest code). */
function saneName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\0");
}

async function statIn(sb: Sandbox, p: string): Promise<Node> {
  if (p === "/") return { type: "dir", size: 0 };
  if (!(await sb.files.exists(p))) throw new ConnectError("not_found", `no such file or directory: ${JSON.stringify(p)}`);
  const name = path.posix.basename(p);
  const found = (await sb.files.list(path.posix.dirname(p))).find((e) => e.name === name);
  return found ? { type: found.type, size: found.size } : { type: "file", size: 0 };
}

/** Entries under `root` down to `depth` levels, parents first (paths absolute). */
async function walk(o: E2bOptions, entry: Entry, root: string, depth: number, max: number): Promise<Map<string, Node>> {
  const out = new Map<string, Node>();
  const visit = async (dir: string, level: number): Promise<void> => {
    const list = await o.registry.use(entry, (sb) => sb.files.list(dir));
    for (const e of list) {
      if (!saneName(e.name)) continue;
      const p = path.posix.join(dir, e.name);
      if (out.size >= max) throw new ConnectError("resource_exhausted", `more than ${max} entries under ${JSON.stringify(root)}`);
      out.set(p, { type: e.type, size: e.size });
      if (e.type === "dir" && level < depth) await visit(p, level + 1);
    }
  };
  await visit(root, 1);
  return out;
}

/** Fail unless `p` is a directory (not_found / invalid_argument as envd answers). */
async function requireDir(o: E2bOptions, entry: Entry, p: string): Promise<void> {
  const node = await o.registry.use(entry, (sb) => statIn(sb, p));
  if (node.type !== "dir") throw new ConnectError("invalid_argument", `path is not a directory: ${JSON.stringify(p)}`);
}

// ---- Watching by polling.

type EventType = "EVENT_TYPE_CREATE" | "EVENT_TYPE_WRITE" | "EVENT_TYPE_REMOVE" | "EVENT_TYPE_RENAME";
interface FsEvent {
  name: string;
  type: EventType;
  entry?: Record<string, unknown>;
}

/** What changed from `before` to `after`, as inotify (envd's fsnotify) would tell it, names relative to `root`. */
export function diff(root: string, before: Map<string, Node>, after: Map<string, Node>, includeEntry: boolean): FsEvent[] {
  const rel = (p: string) => path.posix.relative(root, p);
  const ev = (p: string, type: EventType, n: Node | undefined): FsEvent => (includeEntry && n ? { name: rel(p), type, entry: entryInfo(p, n.type, n.size) } : { name: rel(p), type });
  const created: [string, Node][] = [];
  const removed: [string, Node][] = [];
  const out: FsEvent[] = [];
  for (const [p, n] of after) {
    const old = before.get(p);
    if (!old) created.push([p, n]);
    else if (old.type !== n.type) {
      removed.push([p, old]);
      created.push([p, n]);
    } else if (n.type === "file" && old.size !== n.size) out.push(ev(p, "EVENT_TYPE_WRITE", n));
  }
  for (const [p, n] of before) if (!after.has(p)) removed.push([p, n]);
  // A removal and a creation of the same kind and size in one poll: a rename (old name), then its new name's creation.
  const unpaired = [...created];
  for (const [p, n] of removed) {
    const i = unpaired.findIndex(([q, m]) => q !== p && m.type === n.type && m.size === n.size);
    if (i >= 0) {
      out.push(ev(p, "EVENT_TYPE_RENAME", undefined));
      const [q, m] = unpaired.splice(i, 1)[0]!;
      out.push(ev(q, "EVENT_TYPE_CREATE", m));
    } else out.push(ev(p, "EVENT_TYPE_REMOVE", undefined));
  }
  for (const [p, n] of unpaired) {
    out.push(ev(p, "EVENT_TYPE_CREATE", n));
    if (n.type === "file" && n.size > 0) out.push(ev(p, "EVENT_TYPE_WRITE", n));
  }
  return out;
}

interface WatchSpec {
  root: string;
  recursive: boolean;
  includeEntry: boolean;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Poll `spec.root` until `signal` aborts, the sandbox ends or its E2B session goes, handing each
 * poll's events to `emit`. A paused sandbox is not polled (nor resumed). Resolves when done;
 * rejects with what ended it otherwise (the directory gone, the sandbox's error).
 */
async function pollLoop(o: E2bOptions, entry: Entry, spec: WatchSpec, first: Map<string, Node>, emit: (events: FsEvent[]) => void, signal: AbortSignal): Promise<void> {
  const depth = spec.recursive ? 64 : 1;
  let prev = first;
  for (;;) {
    await sleep(WATCH_POLL_MS, signal);
    if (signal.aborted || entry.sandbox.closed || !o.sessions.find(entry.id)) return;
    if (entry.paused) continue;
    const next = await walk(o, entry, spec.root, depth, MAX_WATCH_ENTRIES);
    if (signal.aborted) return;
    const events = diff(spec.root, prev, next, spec.includeEntry);
    prev = next;
    if (events.length > 0) emit(events);
  }
}

const watchSchema = z
  .object({
    path: z.string().max(4096).optional(),
    recursive: z.boolean().optional(),
    includeEntry: z.boolean().optional(),
    allowNetworkMounts: z.boolean().optional(),
  })
  .loose();

// ---- Errors of the plain HTTP routes (/files): envd's `{ code, message }` with an HTTP status.

const HTTP_STATUS: Partial<Record<ConnectCode, number>> = {
  not_found: 404,
  invalid_argument: 400,
  already_exists: 409,
  failed_precondition: 400,
  permission_denied: 403,
  unauthenticated: 401,
  unavailable: 502,
  canceled: 499,
  deadline_exceeded: 504,
  unimplemented: 501,
};

function httpError(e: unknown, o: E2bOptions, what: string): Response {
  let status: number;
  let message: string;
  if (e instanceof HttpStatusError) {
    status = e.status;
    message = e.message;
  } else {
    const ce = toConnectError(e);
    message = ce.message;
    // A full sandbox file system is envd's 507 (the SDK's NotEnoughSpaceError).
    status = e instanceof FileSystemQuotaError ? 507 : ce.code === "resource_exhausted" ? 429 : (HTTP_STATUS[ce.code] ?? 500);
    if (ce.code === "internal") o.log(`error: e2b envd ${what}: ${(e as Error)?.stack ?? String(e)}`);
  }
  return new Response(JSON.stringify({ code: status, message }), { status, headers: { "content-type": "application/json" } });
}

class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

// ---- Registration.

export function registerFilesystem(app: Hono<SandboxEnv>, o: E2bOptions): void {
  const rpc: RpcOptions = { maxBytes: o.maxJsonBytes, log: o.log };
  /** Watchers per sandbox id (streams and polled ones), for the cap. */
  const watching = new Map<string, number>();
  const polled = new Map<string, { sandboxId: string; events: FsEvent[]; lastAsked: number; stop: AbortController }>();

  const acquire = (id: string) => {
    const n = watching.get(id) ?? 0;
    if (n >= MAX_WATCHERS_PER_SANDBOX) throw new ConnectError("resource_exhausted", `this sandbox already has ${n} directory watchers (at most ${MAX_WATCHERS_PER_SANDBOX}); stop one first`);
    watching.set(id, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (watching.get(id) ?? 1) - 1;
      if (left <= 0) watching.delete(id);
      else watching.set(id, left);
    };
  };

  /** Check a watch request and take the first listing (its errors are the request's). */
  const startWatch = async (msg: Record<string, unknown>, c: Context<SandboxEnv>) => {
    const r = watchSchema.safeParse(msg);
    if (!r.success) throw new ConnectError("invalid_argument", `bad watch request: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
    const spec: WatchSpec = { root: resolvePath(r.data.path ?? "", userOf(c)), recursive: r.data.recursive ?? false, includeEntry: r.data.includeEntry ?? false };
    const entry = c.env.entry;
    await requireDir(o, entry, spec.root);
    const first = await walk(o, entry, spec.root, spec.recursive ? 64 : 1, MAX_WATCH_ENTRIES);
    return { spec, entry, first };
  };

  // ---- GET /files: the file's bytes.
  app.get("/files", async (c) => {
    try {
      const q = new URL(c.req.url).searchParams;
      const p = resolvePath(q.get("path") ?? "", userOf(c, q.get("username")));
      const bytes = await o.registry.use(c.env.entry, async (sb) => {
        if ((await statIn(sb, p)).type === "dir") throw new ConnectError("invalid_argument", `path is a directory: ${JSON.stringify(p)}`);
        return sb.files.read(p, { format: "bytes" });
      });
      return new Response(bytes as Uint8Array<ArrayBuffer>, {
        status: 200,
        headers: { "content-type": "application/octet-stream", "content-length": String(bytes.byteLength), "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(path.posix.basename(p))}` },
      });
    } catch (e) {
      return httpError(e, o, "GET /files");
    }
  });

  // ---- POST /files: one file as application/octet-stream (gzip allowed), or multipart/form-data parts named "file".
  app.post("/files", async (c) => {
    try {
      const q = new URL(c.req.url).searchParams;
      const user = userOf(c, q.get("username"));
      const queryPath = q.get("path");
      const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
      const encoding = (c.req.header("content-encoding") ?? "identity").trim().toLowerCase();
      if (encoding !== "identity" && encoding !== "gzip") throw new HttpStatusError(400, `unsupported Content-Encoding ${JSON.stringify(encoding.slice(0, 64))} (identity or gzip)`);
      let body: Uint8Array;
      try {
        body = await readCapped(c.req.raw, o.maxUploadBytes + (type === "multipart/form-data" ? 64 * 1024 : 0));
      } catch (e) {
        if (e instanceof ConnectError && e.code === "resource_exhausted") throw new HttpStatusError(413, `upload is over this server's limit of ${o.maxUploadBytes} bytes (agentbox serve --max-upload-bytes)`);
        throw e;
      }
      if (encoding === "gzip") {
        try {
          body = gunzipSync(body, { maxOutputLength: o.maxUploadBytes });
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE" || e instanceof RangeError) throw new HttpStatusError(413, `upload is over this server's limit of ${o.maxUploadBytes} bytes once decompressed`);
          throw new HttpStatusError(400, `the gzip body does not decompress: ${(e as Error).message}`);
        }
      }
      const files: { path: string; data: Uint8Array }[] = [];
      if (type === "application/octet-stream") {
        if (queryPath === null || queryPath === "") throw new HttpStatusError(400, "an application/octet-stream upload needs ?path=");
        files.push({ path: resolvePath(queryPath, user), data: body });
      } else if (type === "multipart/form-data") {
        let form: FormData;
        try {
          form = await new Request("http://local/", { method: "POST", headers: { "content-type": c.req.header("content-type")! }, body: body as Uint8Array<ArrayBuffer> }).formData();
        } catch (e) {
          throw new HttpStatusError(400, `the multipart body does not parse: ${(e as Error).message}`);
        }
        const parts = form.getAll("file");
        if (parts.length > MAX_UPLOAD_PARTS) throw new HttpStatusError(400, `more than ${MAX_UPLOAD_PARTS} files in one upload`);
        let total = 0;
        for (const part of parts) {
          if (typeof part === "string") throw new HttpStatusError(400, 'a "file" part must be a file (with a filename)');
          const target = queryPath !== null && queryPath !== "" ? queryPath : part.name;
          if (!target) throw new HttpStatusError(400, "a file part has no filename and there is no ?path=");
          const data = new Uint8Array(await part.arrayBuffer());
          total += data.byteLength;
          if (total > o.maxUploadBytes) throw new HttpStatusError(413, `upload is over this server's limit of ${o.maxUploadBytes} bytes (agentbox serve --max-upload-bytes)`);
          files.push({ path: resolvePath(target, user), data });
        }
        if (files.length === 0) throw new HttpStatusError(400, 'the multipart body has no part named "file"');
      } else {
        throw new HttpStatusError(400, `POST /files takes application/octet-stream or multipart/form-data, not ${JSON.stringify(type.slice(0, 100))}`);
      }
      await o.registry.use(c.env.entry, async (sb) => {
        for (const f of files) {
          const there = await sb.files.exists(f.path);
          if (there && (await statIn(sb, f.path)).type === "dir") throw new ConnectError("invalid_argument", `path is a directory: ${JSON.stringify(f.path)}`);
          await sb.files.write(f.path, f.data);
        }
      });
      return c.json(files.map((f) => ({ name: path.posix.basename(f.path), type: "file", path: f.path })));
    } catch (e) {
      return httpError(e, o, "POST /files");
    }
  });

  // ---- Unary methods.
  const pathMsg = (msg: Record<string, unknown>, c: Context<SandboxEnv>) => resolvePath(msg.path ?? "", userOf(c));

  unary<SandboxEnv>(app, SERVICE, "Stat", rpc, async (msg, c) => {
    const p = pathMsg(msg, c);
    const n = await o.registry.use(c.env.entry, (sb) => statIn(sb, p));
    return { entry: entryInfo(p, n.type, n.size) };
  });

  unary<SandboxEnv>(app, SERVICE, "MakeDir", rpc, async (msg, c) => {
    const p = pathMsg(msg, c);
    await o.registry.use(c.env.entry, async (sb) => {
      if (await sb.files.exists(p)) {
        if ((await statIn(sb, p)).type === "dir") throw new ConnectError("already_exists", `directory already exists: ${JSON.stringify(p)}`);
        throw new ConnectError("invalid_argument", `path already exists and is not a directory: ${JSON.stringify(p)}`);
      }
      await sb.files.makeDir(p);
    });
    return { entry: entryInfo(p, "dir", 0) };
  });

  unary<SandboxEnv>(app, SERVICE, "Move", rpc, async (msg, c) => {
    const user = userOf(c);
    const src = resolvePath(msg.source ?? "", user, "source");
    const dst = resolvePath(msg.destination ?? "", user, "destination");
    const n = await o.registry.use(c.env.entry, async (sb) => {
      await sb.files.rename(src, dst);
      return statIn(sb, dst);
    });
    return { entry: entryInfo(dst, n.type, n.size) };
  });

  unary<SandboxEnv>(app, SERVICE, "ListDir", rpc, async (msg, c) => {
    const p = pathMsg(msg, c);
    const d = z.union([z.int().min(0), z.string().regex(/^\d{1,6}$/)]).optional().safeParse(msg.depth);
    if (!d.success) throw new ConnectError("invalid_argument", "depth must be a non-negative integer");
    const depth = Math.min(Math.max(Number(d.data ?? 1), 1), 64);
    const entry = c.env.entry;
    await requireDir(o, entry, p);
    const all = await walk(o, entry, p, depth, MAX_LIST_ENTRIES);
    return { entries: [...all].map(([q, n]) => entryInfo(q, n.type, n.size)) };
  });

  unary<SandboxEnv>(app, SERVICE, "Remove", rpc, async (msg, c) => {
    const p = pathMsg(msg, c);
    // envd removes with os.RemoveAll: a path that is not there is not an error.
    await o.registry.use(c.env.entry, async (sb) => {
      if (await sb.files.exists(p)) await sb.files.remove(p);
    });
    return {};
  });

  // ---- WatchDir: a server stream of a start message, then events (and keepalives).
  serverStream<SandboxEnv>(app, SERVICE, "WatchDir", rpc, async (msg, sink, c) => {
    const release = acquire(c.env.entry.id);
    const keepalive = setInterval(() => sink.send({ keepalive: {} }), keepaliveMs(c.req.header("keepalive-ping-interval")));
    try {
      const { spec, entry, first } = await startWatch(msg, c);
      sink.send({ start: {} });
      await pollLoop(o, entry, spec, first, (events) => events.forEach((e) => sink.send({ filesystem: e })), sink.signal);
    } finally {
      clearInterval(keepalive);
      release();
    }
  });

  // ---- The polled watcher: CreateWatcher, GetWatcherEvents, RemoveWatcher.
  unary<SandboxEnv>(app, SERVICE, "CreateWatcher", rpc, async (msg, c) => {
    const release = acquire(c.env.entry.id);
    try {
      const { spec, entry, first } = await startWatch(msg, c);
      const id = randomUUID();
      const w = { sandboxId: entry.id, events: [] as FsEvent[], lastAsked: Date.now(), stop: new AbortController() };
      polled.set(id, w);
      const idle = setInterval(() => {
        if (Date.now() - w.lastAsked > WATCHER_IDLE_MS) w.stop.abort();
      }, 10_000);
      idle.unref();
      const emit = (events: FsEvent[]) => {
        w.events.push(...events);
        if (w.events.length > MAX_PENDING_EVENTS) w.events.splice(0, w.events.length - MAX_PENDING_EVENTS);
      };
      void pollLoop(o, entry, spec, first, emit, w.stop.signal)
        .catch((e: unknown) => {
          const ce = toConnectError(e);
          if (ce.code === "internal") o.log(`error: e2b watcher ${id}: ${(e as Error)?.stack ?? String(e)}`);
        })
        .finally(() => {
          clearInterval(idle);
          polled.delete(id);
          release();
        });
      return { watcherId: id };
    } catch (e) {
      release();
      throw e;
    }
  });

  const watcherOf = (msg: Record<string, unknown>, c: Context<SandboxEnv>) => {
    const id = typeof msg.watcherId === "string" ? msg.watcherId : "";
    const w = polled.get(id);
    if (!w || w.sandboxId !== c.env.entry.id) throw new ConnectError("not_found", `watcher ${JSON.stringify(id.slice(0, 64))} not found (removed, idle for ${WATCHER_IDLE_MS / 1000} s, or its sandbox ended)`);
    return { id, w };
  };

  unary<SandboxEnv>(app, SERVICE, "GetWatcherEvents", rpc, (msg, c) => {
    const { w } = watcherOf(msg, c);
    w.lastAsked = Date.now();
    const events = w.events.splice(0, w.events.length);
    return Promise.resolve({ events });
  });

  unary<SandboxEnv>(app, SERVICE, "RemoveWatcher", rpc, (msg, c) => {
    const { id, w } = watcherOf(msg, c);
    w.stop.abort();
    polled.delete(id);
    return Promise.resolve({});
  });
}
