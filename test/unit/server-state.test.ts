// The server's state directory (server/state.ts): entries appear whole or not at all, are checked
// against their meta.json (sizes, SHA-256, the files listed being exactly those there, paths inside
// the entry), and a failing one is moved aside with its reason, never returned.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { StateDir } from "../../src/server/state.js";

const roots: string[] = [];
after(() => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
});

function open(): { state: StateDir; root: string; logs: string[] } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-state-unit-"));
  roots.push(root);
  const logs: string[] = [];
  return { state: StateDir.open(root, (l) => logs.push(l)), root, logs };
}

const ID = `snap_${"0a".repeat(12)}`;
const SB = `sb_${"0b".repeat(12)}`;

async function writeOne(state: StateDir, id = ID): Promise<string> {
  return state.write("snapshots", id, { owner: "alice" }, async (dir) => {
    fs.writeFileSync(path.join(dir, "a.bin"), Buffer.alloc(5000, 7));
    fs.mkdirSync(path.join(dir, "sub"));
    fs.writeFileSync(path.join(dir, "sub", "b"), "bee");
  });
}

describe("StateDir", () => {
  it("writes an entry whole: payload and meta.json (sizes, SHA-256) renamed into place; read back as written", async () => {
    const { state, root } = open();
    const dir = await writeOne(state);
    assert.equal(dir, path.join(root, "snapshots", ID));
    const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8"));
    assert.deepEqual(meta.files.map((f: { path: string; bytes: number }) => [f.path, f.bytes]), [["a.bin", 5000], ["sub/b", 3]]);
    assert.match(meta.files[1].sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(fs.readdirSync(root).filter((n) => n.startsWith(".tmp-")), [], "no temporary directory left");
    const entries = await state.entries("snapshots");
    assert.deepEqual(entries.map((e) => [e.id, e.info]), [[ID, { owner: "alice" }]]);
    assert.ok(state.has("snapshots", ID));
    state.remove("snapshots", ID);
    assert.ok(!fs.existsSync(dir));
    assert.deepEqual(await state.entries("snapshots"), []);
  });

  it("a write that fails leaves nothing; a .tmp-* left by a killed writer is removed at open", async () => {
    const { state, root, logs } = open();
    await assert.rejects(state.write("snapshots", ID, {}, async (dir) => {
      fs.writeFileSync(path.join(dir, "part"), "x");
      throw new Error("disk full");
    }), /disk full/);
    assert.deepEqual(fs.readdirSync(root).sort(), ["paused", "snapshots"]);
    assert.deepEqual(fs.readdirSync(path.join(root, "snapshots")), []);
    fs.mkdirSync(path.join(root, ".tmp-0123"));
    fs.writeFileSync(path.join(root, ".tmp-0123", "half"), "x");
    StateDir.open(root, (l) => logs.push(l));
    assert.ok(!fs.existsSync(path.join(root, ".tmp-0123")));
    assert.match(logs.join("\n"), /removed \.tmp-0123/);
  });

  it("writing an id again replaces the entry whole", async () => {
    const { state } = open();
    await writeOne(state);
    await state.write("snapshots", ID, { v: 2 }, async (dir) => fs.writeFileSync(path.join(dir, "only"), "1"));
    const [e] = await state.entries("snapshots");
    assert.deepEqual(e?.info, { v: 2 });
    assert.deepEqual(fs.readdirSync(e!.dir).sort(), ["meta.json", "only"]);
  });

  /** Each way an entry can be damaged, and the reason logged for it. */
  const damage: [string, (dir: string) => void, RegExp][] = [
    ["a flipped byte", (d) => fs.writeFileSync(path.join(d, "a.bin"), Buffer.concat([Buffer.alloc(4999, 7), Buffer.from([8])])), /"a\.bin" does not match its SHA-256/],
    ["a truncated file", (d) => fs.truncateSync(path.join(d, "a.bin"), 100), /"a\.bin" holds 100 bytes where meta\.json says 5000/],
    ["a missing file", (d) => fs.rmSync(path.join(d, "sub", "b")), /1 of them missing/],
    ["an unlisted file", (d) => fs.writeFileSync(path.join(d, "extra"), ""), /"extra" is not listed/],
    ["a symbolic link", (d) => fs.symlinkSync("/etc/passwd", path.join(d, "link")), /"link" is neither a regular file/],
    ["no meta.json", (d) => fs.rmSync(path.join(d, "meta.json")), /meta\.json is missing/],
    ["meta.json cut short", (d) => fs.writeFileSync(path.join(d, "meta.json"), fs.readFileSync(path.join(d, "meta.json")).subarray(0, 40)), /meta\.json is not valid/],
    [
      "meta.json naming a path outside the entry",
      (d) => {
        const m = JSON.parse(fs.readFileSync(path.join(d, "meta.json"), "utf8"));
        m.files[0].path = "../../../etc/passwd";
        fs.writeFileSync(path.join(d, "meta.json"), JSON.stringify(m));
      },
      /names the path "\.\.\/\.\.\/\.\.\/etc\/passwd", which is not a plain relative path/,
    ],
    [
      "meta.json of another entry",
      (d) => {
        const m = JSON.parse(fs.readFileSync(path.join(d, "meta.json"), "utf8"));
        m.id = `snap_${"ff".repeat(12)}`;
        fs.writeFileSync(path.join(d, "meta.json"), JSON.stringify(m));
      },
      /describes snapshots\/snap_f+, not/,
    ],
  ];
  for (const [what, harm, why] of damage) {
    it(`${what}: skipped, logged, moved aside as .corrupt-<id>, its reason kept`, async () => {
      const { state, root, logs } = open();
      const dir = await writeOne(state);
      harm(dir);
      assert.deepEqual(await state.entries("snapshots"), []);
      assert.match(logs.join("\n"), new RegExp(`skipped snapshot "${ID}": .*${why.source}`));
      assert.match(state.refusedReason("snapshots", ID) ?? "", why);
      assert.ok(!fs.existsSync(dir));
      assert.match(fs.readFileSync(path.join(root, "snapshots", `.corrupt-${ID}`, "reason.txt"), "utf8"), why);
      // Not looked at again.
      assert.deepEqual(await state.entries("snapshots"), []);
    });
  }

  it("a directory that is not an id of its kind is refused", async () => {
    const { state, root, logs } = open();
    fs.mkdirSync(path.join(root, "paused", "not-an-id"));
    await state.write("paused", SB, {}, async () => undefined);
    assert.deepEqual((await state.entries("paused")).map((e) => e.id), [SB]);
    assert.match(logs.join("\n"), /skipped paused sandbox "not-an-id": "not-an-id" is not a paused id/);
    await assert.rejects(state.write("paused", "../escape", {}, async () => undefined), /not a paused id/);
  });
});
