// The server's state directory (`agentbox serve --state-dir DIR`): snapshots and paused sandboxes
// that outlive the process. Each entry is a directory, DIR/snapshots/<id>/ or DIR/paused/<id>/,
// written whole into DIR/.tmp-<random>/ (payload first, then `meta.json` naming every payload file
// with its size and SHA-256), fsynced, and renamed into place: a process killed mid-write leaves
// a .tmp-* directory (removed at the next start) or the complete entry, never half of one. At
// start every entry is checked against its meta.json; one that does not match is moved aside as
// .corrupt-<id> (with the reason in reason.txt) and never used.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { z } from "zod";

export type StateKind = "snapshots" | "paused";

const META_FILE = "meta.json";
const MAX_META_BYTES = 1024 * 1024;
/** Most payload files one entry may list (a nano history writes one per host write and image file). */
const MAX_FILES = 100_000;
const ID = { snapshots: /^snap_[0-9a-f]{24}$/, paused: /^sb_[0-9a-f]{24}$/ } as const;
/** One path segment of a payload file: no separators, no `.`/`..`. */
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

const metaSchema = z.strictObject({
  version: z.literal(1),
  kind: z.enum(["snapshots", "paused"]),
  id: z.string().max(64),
  /** What the caller keeps about the entry (owner, times, ...), checked by the caller's own schema. */
  info: z.record(z.string(), z.unknown()),
  files: z.array(z.strictObject({ path: z.string().max(1024), bytes: z.number().int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) })).max(MAX_FILES),
});

/** An entry that passed its checks: its directory and the caller's info. */
export interface StateEntry {
  id: string;
  dir: string;
  info: Record<string, unknown>;
}

export class StateDir {
  /** Entries refused at start, by kind and id: why (what a request naming one is told). */
  private readonly refused = new Map<string, string>();

  private constructor(
    readonly root: string,
    private readonly log: (line: string) => void,
    /** Names of this process's temporary directories: `.tmp-` (`.tmp-<node>~` on a directory the cluster's nodes share). */
    private readonly tmp: string,
  ) {}

  /**
   * Open (creating) `root`; half-written entries a killed process left (.tmp-*) are deleted. A
   * directory the nodes of a cluster share (`node`: this node's id) is written through
   * `.tmp-<node>~*` names, and only this node's own leftovers are deleted (another node may be
   * writing its own at this moment).
   */
  static open(root: string, log: (line: string) => void, node?: string): StateDir {
    const abs = path.resolve(root);
    const tmp = node === undefined ? ".tmp-" : `.tmp-${node}~`;
    for (const kind of ["snapshots", "paused"] as const) fs.mkdirSync(path.join(abs, kind), { recursive: true, mode: 0o700 });
    for (const name of fs.readdirSync(abs)) {
      if (!name.startsWith(tmp)) continue;
      fs.rmSync(path.join(abs, name), { recursive: true, force: true });
      log(`state: removed ${name}, an entry a stopped server had not finished writing`);
    }
    return new StateDir(abs, log, tmp);
  }

  /**
   * Write one entry atomically: `fill` puts the payload into a fresh directory, then meta.json
   * (every file's size and SHA-256, and `info`) is written last, everything fsynced, and the
   * directory renamed to DIR/<kind>/<id>. Resolves with that path. On failure nothing is left.
   */
  async write(kind: StateKind, id: string, info: Record<string, unknown>, fill: (dir: string) => Promise<void>): Promise<string> {
    if (!ID[kind].test(id)) throw new Error(`state: ${JSON.stringify(id)} is not a ${kind} id`);
    const tmp = path.join(this.root, `${this.tmp}${randomBytes(8).toString("hex")}`);
    fs.mkdirSync(tmp, { mode: 0o700 });
    try {
      await fill(tmp);
      const files = await payloadFiles(tmp);
      const meta: z.input<typeof metaSchema> = { version: 1, kind, id, info, files };
      const metaPath = path.join(tmp, META_FILE);
      fs.writeFileSync(metaPath, JSON.stringify(meta));
      fsyncPath(metaPath);
      fsyncDirs(tmp);
      const final = path.join(this.root, kind, id);
      // An entry of this id already there (a sandbox paused again) is replaced whole.
      const old = fs.existsSync(final) ? path.join(this.root, `${this.tmp}old-${randomBytes(8).toString("hex")}`) : undefined;
      if (old) fs.renameSync(final, old);
      fs.renameSync(tmp, final);
      fsyncPath(path.join(this.root, kind));
      if (old) fs.rmSync(old, { recursive: true, force: true });
      return final;
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** Whether DIR/<kind>/<id> is there (written, not deleted). */
  has(kind: StateKind, id: string): boolean {
    return ID[kind].test(id) && fs.existsSync(path.join(this.root, kind, id, META_FILE));
  }

  /** Delete an entry (gone already: nothing to do). */
  remove(kind: StateKind, id: string): void {
    if (!ID[kind].test(id)) return;
    const dir = path.join(this.root, kind, id);
    if (!fs.existsSync(dir)) return;
    // Renamed first: a stop during the delete leaves a .tmp-* the next start removes, not half an entry.
    const trash = path.join(this.root, `${this.tmp}rm-${randomBytes(8).toString("hex")}`);
    try {
      fs.renameSync(dir, trash);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return; // another node removed it first
      throw e;
    }
    fs.rmSync(trash, { recursive: true, force: true });
  }

  /**
   * The entries of `kind` whose files match their meta.json; each other one is moved aside
   * (.corrupt-<id>) with a log line saying why, and remembered (`refusedReason`).
   */
  async entries(kind: StateKind): Promise<StateEntry[]> {
    const out: StateEntry[] = [];
    const base = path.join(this.root, kind);
    for (const name of fs.readdirSync(base).sort()) {
      if (name.startsWith(".corrupt-")) continue;
      const dir = path.join(base, name);
      try {
        out.push(await verify(kind, name, dir));
      } catch (e) {
        this.refuse(kind, name, (e as Error).message);
      }
    }
    return out;
  }

  /**
   * One entry, checked as entries() checks each (refused and moved aside when it fails); undefined
   * when there is none of that id. For a cluster's shared directory, read on demand.
   */
  async entry(kind: StateKind, id: string): Promise<StateEntry | undefined> {
    if (!ID[kind].test(id)) return undefined;
    const dir = path.join(this.root, kind, id);
    if (!fs.existsSync(dir)) return undefined;
    try {
      return await verify(kind, id, dir);
    } catch (e) {
      this.refuse(kind, id, (e as Error).message);
      return undefined;
    }
  }

  /** Move an entry aside as .corrupt-<id> (never used again) and log why. */
  refuse(kind: StateKind, id: string, why: string): void {
    const from = path.join(this.root, kind, id);
    let to = path.join(this.root, kind, `.corrupt-${id}`);
    if (fs.existsSync(to)) to = `${to}-${randomBytes(4).toString("hex")}`;
    try {
      fs.renameSync(from, to);
      fs.writeFileSync(path.join(to, "reason.txt"), `${why}\n`);
    } catch {
      // not a directory we can move (or gone): the log line still says why it is not used
    }
    this.refused.set(`${kind}/${id}`, why);
    this.log(`state: skipped ${kind === "snapshots" ? "snapshot" : "paused sandbox"} ${JSON.stringify(id.slice(0, 80))}: ${why}; moved aside to ${path.relative(this.root, to)}`);
  }

  /** Why the entry `id` was refused at start, when it was. */
  refusedReason(kind: StateKind, id: string): string | undefined {
    return this.refused.get(`${kind}/${id}`);
  }
}

/** Check one entry: its name, meta.json, and that the files on disk are exactly those it lists, by size and SHA-256. */
async function verify(kind: StateKind, name: string, dir: string): Promise<StateEntry> {
  if (!ID[kind].test(name)) throw new Error(`${JSON.stringify(name.slice(0, 80))} is not a ${kind} id`);
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new Error("not a directory");
  const metaPath = path.join(dir, META_FILE);
  let metaStat: fs.Stats;
  try {
    metaStat = fs.lstatSync(metaPath);
  } catch {
    throw new Error("meta.json is missing (the entry was not written whole)");
  }
  if (!metaStat.isFile() || metaStat.size > MAX_META_BYTES) throw new Error(`meta.json is not a regular file of at most ${MAX_META_BYTES} bytes`);
  let meta: z.output<typeof metaSchema>;
  try {
    meta = metaSchema.parse(JSON.parse(fs.readFileSync(metaPath, "utf8")));
  } catch (e) {
    throw new Error(`meta.json is not valid: ${e instanceof z.ZodError ? e.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ") : (e as Error).message}`);
  }
  if (meta.kind !== kind || meta.id !== name) throw new Error(`meta.json describes ${meta.kind}/${meta.id}, not ${kind}/${name}`);
  const listed = new Map<string, { bytes: number; sha256: string }>();
  for (const f of meta.files) {
    if (f.path === META_FILE || f.path.split("/").some((s) => !SEGMENT.test(s))) throw new Error(`meta.json names the path ${JSON.stringify(f.path.slice(0, 200))}, which is not a plain relative path inside the entry`);
    listed.set(f.path, f);
  }
  const found = await payloadFiles(dir, (rel, bytes) => {
    const want = listed.get(rel);
    if (!want) throw new Error(`${JSON.stringify(rel)} is not listed in meta.json`);
    if (want.bytes !== bytes) throw new Error(`${JSON.stringify(rel)} holds ${bytes} bytes where meta.json says ${want.bytes} (truncated or changed)`);
  });
  for (const f of found) {
    if ((listed.get(f.path) as { sha256: string }).sha256 !== f.sha256) throw new Error(`${JSON.stringify(f.path)} does not match its SHA-256 in meta.json (corrupted)`);
  }
  if (found.length !== listed.size) throw new Error(`meta.json lists ${listed.size} files, ${listed.size - found.length} of them missing`);
  return { id: name, dir, info: meta.info };
}

/**
 * Every payload file under `dir` (not meta.json), sorted, with size and SHA-256; anything but
 * regular files and directories is an error. `check` sees each file's size before it is hashed.
 */
async function payloadFiles(dir: string, check?: (rel: string, bytes: number) => void): Promise<{ path: string; bytes: number; sha256: string }[]> {
  const out: { path: string; bytes: number; sha256: string }[] = [];
  const walk = async (rel: string): Promise<void> => {
    const abs = path.join(dir, rel);
    for (const name of fs.readdirSync(abs).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (r === META_FILE) continue;
      const st = fs.lstatSync(path.join(dir, r));
      if (st.isDirectory()) await walk(r);
      else if (st.isFile()) {
        if (out.length >= MAX_FILES) throw new Error(`more than ${MAX_FILES} files`);
        check?.(r, st.size);
        out.push({ path: r, bytes: st.size, sha256: await sha256File(path.join(dir, r)) });
      } else throw new Error(`${JSON.stringify(r)} is neither a regular file nor a directory`);
    }
  };
  await walk("");
  return out;
}

async function sha256File(p: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of fs.createReadStream(p)) h.update(chunk as Buffer);
  return h.digest("hex");
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsync every file and directory under `dir`, children before their directory. */
function fsyncDirs(dir: string): void {
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    if (st.isDirectory()) fsyncDirs(p);
    else if (st.isFile()) fsyncPath(p);
  }
  fsyncPath(dir);
}
