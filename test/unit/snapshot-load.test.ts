// python/snapshot-load.ts: the memory image copied page by page from the file ends byte for byte
// as HEAP8.set of the whole file would leave it (zero pages over stale bytes included); every other
// typed-array copy is the native one; the prototype is as it was afterwards; a bad header fails.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { snapshotFromFile } from "../../src/worker/python/snapshot-load.js";

const PAGE = 4096;

function snapshotFile(image: Uint8Array, headerBytes = 2 * PAGE): string {
  const head = Buffer.alloc(headerBytes);
  head.writeUInt32LE(0x1234, 0); // magic (not checked here: Pyodide checks it)
  head.writeUInt32LE(headerBytes, 4); // where the image starts
  head.write('{"json":true}', 48);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-snapload-")), "s.snapshot");
  fs.writeFileSync(file, Buffer.concat([head, image]));
  return file;
}

describe("snapshot-load", () => {
  it("copies the image exactly: non-zero pages written, zero pages left or cleared, a partial last page", async () => {
    // 300 pages and a half: every third page zero in the file; memory holds stale bytes in some.
    const image = new Uint8Array(300 * PAGE + PAGE / 2);
    for (let p = 0; p * PAGE < image.length; p++) if (p % 3 !== 0) image.fill((p % 250) + 1, p * PAGE, Math.min((p + 1) * PAGE, image.length));
    image[image.length - 1] = 7;
    const file = snapshotFile(image);
    const s = snapshotFromFile(file);
    assert.equal(s.bytes.length, 2 * PAGE + image.length);
    assert.equal(Buffer.from(s.bytes.subarray(48, 61)).toString(), '{"json":true}', "the header is there for Pyodide to parse");
    const memory = new Int8Array(image.length + PAGE);
    memory.fill(9, 0, 10 * PAGE); // stale bytes where the image has zero pages (0, 3, 6, 9)
    const other = new Int8Array(4);
    await s.during(async () => {
      other.set([1, 2, 3, 4]); // any other copy: native
      memory.set(s.bytes.subarray(2 * PAGE)); // what Pyodide's restoreSnapshot does
    });
    assert.deepEqual([...other], [1, 2, 3, 4]);
    assert.ok(Buffer.from(memory.buffer, 0, image.length).equals(Buffer.from(image)), "memory equals the image byte for byte");
    assert.ok(memory.subarray(image.length).every((b) => b === 0), "nothing past the image written");
    assert.equal(Object.prototype.hasOwnProperty.call(Int8Array.prototype, "set"), false, "Int8Array.prototype as it was");
  });

  it("fails clearly when the load never copied the snapshot, and on a header that points past the file", async () => {
    const s = snapshotFromFile(snapshotFile(new Uint8Array(PAGE)));
    await assert.rejects(s.during(async () => undefined), /did not copy its memory snapshot/);
    assert.equal(Object.prototype.hasOwnProperty.call(Int8Array.prototype, "set"), false);
    const bad = snapshotFile(new Uint8Array(PAGE));
    const fd = fs.openSync(bad, "r+");
    const b = Buffer.alloc(4);
    b.writeUInt32LE(1 << 30, 0);
    fs.writeSync(fd, b, 0, 4, 4);
    fs.closeSync(fd);
    assert.throws(() => snapshotFromFile(bad), /has no valid header/);
  });
});
