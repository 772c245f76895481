// engines/file-walk: listTree (listings in flight together) finds what walkFiles visits, in the
// same order, with the same refusals; mapLimited keeps order and its bound.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { listTree, mapLimited, walkFiles, type WalkEntry, type WalkOptions } from "../../src/engines/file-walk.js";
import type { DirEntry } from "../../src/protocol/messages.js";

/** A fake engine over a map of directory → entries, answering after a random delay (out of order). */
function fakeTree(dirs: Record<string, [string, "dir" | "file" | "symlink", number][]>) {
  const calls = { list: 0, inFlight: 0, maxInFlight: 0 };
  const later = async <T>(v: () => T): Promise<T> => {
    calls.inFlight++;
    calls.maxInFlight = Math.max(calls.maxInFlight, calls.inFlight);
    await new Promise((r) => setTimeout(r, Math.random() * 5));
    calls.inFlight--;
    return v();
  };
  return {
    calls,
    exists: (p: string) => later(() => p in dirs),
    list: (p: string) =>
      later((): DirEntry[] => {
        calls.list++;
        const d = dirs[p];
        if (!d) throw new Error(`ENOENT ${p}`);
        return d.map(([name, type, size]) => ({ name, path: `${p}/${name}`, type, size }));
      }),
  };
}

const opts = (maxEntries = 100, mountPaths: string[] = []): WalkOptions => ({ mountPaths, maxEntries, tooMany: () => new Error("too many") });

describe("listTree", () => {
  const tree = {
    "/home/user": [
      ["b", "dir", 0],
      ["a.txt", "file", 3],
      ["in", "dir", 0],
      ["link", "symlink", 0],
      ["../x", "file", 1],
      ["", "file", 1],
    ],
    "/home/user/b": [
      ["c", "dir", 0],
      ["d.bin", "file", 7],
    ],
    "/home/user/b/c": [["e", "file", 0]],
    "/home/user/in": [["mounted.txt", "file", 5]],
    "/tmp": [["t", "file", 1]],
  } satisfies Record<string, [string, "dir" | "file" | "symlink", number][]>;

  it("finds walkFiles' entries in walkFiles' order (parents first), mounts and odd names skipped", async () => {
    const walked: WalkEntry[] = [];
    await walkFiles(fakeTree(tree), opts(100, ["/home/user/in"]), async (e) => void walked.push(e));
    for (let i = 0; i < 5; i++) assert.deepEqual(await listTree(fakeTree(tree), opts(100, ["/home/user/in"])), walked);
    assert.deepEqual(
      walked.map((e) => e.path),
      ["/home/user/b", "/home/user/b/c", "/home/user/b/c/e", "/home/user/b/d.bin", "/home/user/a.txt", "/tmp/t"],
    );
  });

  it("lists directories together, skips a root that does not exist, and refuses past maxEntries", async () => {
    const f = fakeTree(tree);
    await listTree(f, opts());
    assert.ok(f.calls.maxInFlight >= 3, `listings in flight together (${f.calls.maxInFlight})`);
    const { "/tmp": _tmp, ...noTmp } = tree;
    assert.deepEqual((await listTree(fakeTree(noTmp), opts())).at(-1)?.path, "/home/user/in/mounted.txt");
    await assert.rejects(listTree(fakeTree(tree), opts(4)), /too many/);
  });
});

describe("mapLimited", () => {
  it("keeps order, holds its bound, and stops starting calls after a failure", async () => {
    let inFlight = 0;
    let max = 0;
    const out = await mapLimited([...Array(20).keys()], 4, async (i) => {
      max = Math.max(max, ++inFlight);
      await new Promise((r) => setTimeout(r, Math.random() * 3));
      inFlight--;
      return i * 2;
    });
    assert.deepEqual(out, [...Array(20).keys()].map((i) => i * 2));
    assert.equal(max, 4);
    let started = 0;
    await assert.rejects(
      mapLimited([...Array(50).keys()], 2, async (i) => {
        started++;
        await new Promise((r) => setTimeout(r, 1));
        if (i === 3) throw new Error("boom");
      }),
      /boom/,
    );
    assert.ok(started < 10, `no call starts after the failure (${started})`);
  });
});
