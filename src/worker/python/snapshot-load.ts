// Restoring Pyodide's memory snapshot with fewer pages touched. Pyodide takes the snapshot as one
// buffer (the whole file, ~30 MB) and copies its data into fresh Wasm memory with HEAP8.set: every
// page is written twice (the buffer, then the memory), ~14 MB of it zeros that fresh memory already
// holds. Each page first touched costs a page fault, which under nested virtualisation is most of a
// cold worker's kernel time, and stays resident (PSS) for the worker's life.
//
// Here Pyodide gets a stand-in of the file's length in which only the header (what Pyodide parses:
// magic, offsets, build id, JSON) is written; the rest of that ArrayBuffer is never touched, so it
// costs no memory. While loadPyodide runs, the one copy from the stand-in into Wasm memory is taken
// over: the file is read 1 MiB at a time into one reused buffer, and each page is copied unless it
// is zero both in the file and in memory already. The memory ends byte for byte as HEAP8.set
// would leave it. Every other typed-array copy goes to the native method untouched.
import fs from "node:fs";

const PAGE = 4096;
const CHUNK = 1 << 20;
/** Largest header (everything before the memory image) accepted from a snapshot file. */
const MAX_HEADER_BYTES = 16 << 20;

/** Whether every byte of `b` is zero (words where aligned, then bytes). */
function isZero(b: Uint8Array): boolean {
  const aligned = b.byteOffset % 4 === 0;
  const words = aligned ? b.length >>> 2 : 0;
  if (words > 0) {
    const w = new Uint32Array(b.buffer, b.byteOffset, words);
    for (let i = 0; i < words; i++) if (w[i] !== 0) return false;
  }
  for (let i = words << 2; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

type SetFn = (this: Int8Array, source: ArrayLike<number>, offset?: number) => void;

/**
 * The snapshot in `file` for Pyodide's `_loadSnapshot`, and `during(load)`, which runs `load` (the
 * loadPyodide call) with the copy of that snapshot into Wasm memory done page by page from the file.
 */
export function snapshotFromFile(file: string): { bytes: Uint8Array; during<T>(load: () => Promise<T>): Promise<T> } {
  const fd = fs.openSync(file, "r");
  const size = fs.fstatSync(fd).size;
  const head = Buffer.alloc(Math.min(size, PAGE));
  fs.readSync(fd, head, 0, head.length, 0);
  // Pyodide's layout: uint32 magic, uint32 offset of the memory image, uint32 JSON length, ...
  const dataAt = head.length >= 12 ? head.readUInt32LE(4) : 0;
  if (dataAt < 12 || dataAt > MAX_HEADER_BYTES || dataAt > size) {
    fs.closeSync(fd);
    throw new Error(`the memory snapshot ${file} has no valid header (its image would start at byte ${dataAt} of ${size})`);
  }
  const stand = new Uint8Array(size);
  fs.readSync(fd, stand, 0, dataAt, 0);
  const proto = Int8Array.prototype as unknown as { set: SetFn };
  const native = proto.set; // %TypedArray%.prototype.set, inherited: the override is an own property, deleted after
  const hadOwn = Object.prototype.hasOwnProperty.call(proto, "set");
  let copied = false;
  const copyFromFile = (into: Int8Array, source: Uint8Array, offset: number) => {
    copied = true;
    const dest = new Uint8Array(into.buffer, into.byteOffset + offset, source.length);
    const chunk = Buffer.allocUnsafeSlow(CHUNK);
    for (let pos = 0; pos < source.length; pos += CHUNK) {
      const want = Math.min(CHUNK, source.length - pos);
      if (fs.readSync(fd, chunk, 0, want, source.byteOffset + pos) !== want) throw new Error(`the memory snapshot ${file} ended early`);
      for (let p = 0; p < want; p += PAGE) {
        const page = chunk.subarray(p, Math.min(p + PAGE, want));
        const at = pos + p;
        if (!isZero(page)) dest.set(page, at);
        else if (!isZero(dest.subarray(at, at + page.length))) dest.fill(0, at, at + page.length);
      }
    }
  };
  return {
    bytes: stand,
    async during<T>(load: () => Promise<T>): Promise<T> {
      proto.set = function (this: Int8Array, source: ArrayLike<number>, offset?: number) {
        if (source instanceof Uint8Array && source.buffer === stand.buffer && source.byteOffset >= dataAt) return copyFromFile(this, source, offset ?? 0);
        return native.call(this, source, offset);
      };
      try {
        const loaded = await load();
        // A Pyodide that no longer copies its snapshot with HEAP8.set would have restored zeros.
        if (!copied) throw new Error("Pyodide did not copy its memory snapshot through HEAP8.set, which snapshot-load.ts relies on (was Pyodide upgraded?)");
        return loaded;
      } finally {
        if (hadOwn) proto.set = native;
        else delete (proto as { set?: SetFn }).set;
        fs.closeSync(fd);
      }
    },
  };
}
