// Reading and writing an engine's saved state in a directory on disk (`EngineSnapshot.persist`, the
// registry's `loadEngineSnapshot`). What is read back is hostile input: a descriptor names files by
// paths relative to its directory, each checked here to stay inside it (plain segments, no
// symlink anywhere on the way), and every file is size-checked before it is read.
import fs from "node:fs";
import path from "node:path";
import { SavedStateError } from "../errors.js";

/** One path segment a saved state may name: no separators, no `.`/`..`, nothing a shell or fs treats specially. */
const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** The host path of `rel` (segments joined by "/") inside `dir`; refuses anything that could leave it. */
export function insideDir(dir: string, rel: string): string {
  const segments = rel.split("/");
  if (rel.length > 1024 || segments.some((s) => !SEGMENT.test(s))) {
    throw new SavedStateError(`the saved state in ${dir} names the path ${JSON.stringify(rel.slice(0, 200))}, which is not a plain relative path inside its directory`);
  }
  let p = dir;
  for (const s of segments) {
    p = path.join(p, s);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch {
      throw new SavedStateError(`the saved state in ${dir} names ${JSON.stringify(rel)}, which does not exist`);
    }
    if (st.isSymbolicLink()) throw new SavedStateError(`the saved state in ${dir} names ${JSON.stringify(rel)}, which goes through a symbolic link (refused: it could point outside the directory)`);
  }
  return p;
}

/** The bytes of file `rel` inside `dir`, at most `maxBytes`. */
export function readSavedFile(dir: string, rel: string, maxBytes: number): Buffer {
  const p = insideDir(dir, rel);
  const st = fs.lstatSync(p);
  if (!st.isFile()) throw new SavedStateError(`the saved state in ${dir}: ${JSON.stringify(rel)} is not a regular file`);
  if (st.size > maxBytes) throw new SavedStateError(`the saved state in ${dir}: ${JSON.stringify(rel)} holds ${st.size} bytes, more than the ${maxBytes} it may`);
  const data = fs.readFileSync(p);
  if (data.byteLength !== st.size) throw new SavedStateError(`the saved state in ${dir}: ${JSON.stringify(rel)} changed while it was read`);
  return data;
}

/** Directory `rel` inside `dir`, holding only regular files and directories (no links, devices, sockets). */
export function savedDir(dir: string, rel: string): string {
  const top = insideDir(dir, rel);
  const walk = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const name of fs.readdirSync(p)) walk(path.join(p, name));
    else if (!st.isFile()) throw new SavedStateError(`the saved state in ${dir}: ${JSON.stringify(path.relative(dir, p))} is neither a regular file nor a directory`);
  };
  if (!fs.lstatSync(top).isDirectory()) throw new SavedStateError(`the saved state in ${dir}: ${JSON.stringify(rel)} is not a directory`);
  walk(top);
  return top;
}

/** Move `from` (a file or directory) to `to`: a rename, or a copy and delete across file systems. */
export function moveInto(from: string, to: string): void {
  try {
    fs.renameSync(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EXDEV") throw e;
    fs.cpSync(from, to, { recursive: true, errorOnExist: true, force: false });
    fs.rmSync(from, { recursive: true, force: true });
  }
}
