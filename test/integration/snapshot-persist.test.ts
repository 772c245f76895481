// SandboxSnapshot.persist(dir) / SandboxSnapshot.load(dir) (nano, by replay): a loaded snapshot
// restores as the original does; what is read back is checked (a data file named outside the
// directory, through a link, or bigger than the history cap; an engine this build lacks; options
// the schema refuses; a heavy checkpoint of an image this host does not have) and refused with
// SavedStateError; a sandbox with network secrets is never written.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { Sandbox, SandboxSnapshot, SavedStateError } from "../../src/index.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  await Sandbox.shutdownPool();
});

function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-persist-test-"));
  dirs.push(d);
  return d;
}

/** A persisted nano snapshot (variables, a file by code, one by the host); its directory. */
async function persisted(): Promise<string> {
  await using sb = await Sandbox.create({ language: "python", seed: 11, pool: false });
  await sb.runCode("import random\nx = random.random()\nopen('/home/user/f.txt', 'w').write('by code')");
  await sb.files.write("/tmp/host.bin", new Uint8Array([0, 1, 2, 255]));
  const snap = await sb.snapshot();
  const dir = tmp();
  await snap.persist(dir);
  return dir;
}

function editJson(dir: string, edit: (j: { engineId: string; options: Record<string, unknown>; engine: { steps: { kind: string; data?: string }[] } }) => void): void {
  const p = path.join(dir, "snapshot.json");
  const j = JSON.parse(fs.readFileSync(p, "utf8"));
  edit(j);
  fs.writeFileSync(p, JSON.stringify(j));
}

describe("SandboxSnapshot.persist / load", () => {
  it("a loaded snapshot restores the sandbox as saved (variables, files by code and by the host, the seeded stream)", async () => {
    await using sb = await Sandbox.create({ language: "python", seed: 11, pool: false });
    await sb.runCode("import random\nx = random.random()\nopen('/home/user/f.txt', 'w').write('by code')");
    await sb.files.write("/tmp/host.bin", new Uint8Array([0, 1, 2, 255]));
    const dir = tmp();
    await (await sb.snapshot()).persist(dir);
    const next = (await sb.runCode("(x, random.random())")).value;
    const loaded = await SandboxSnapshot.load(dir);
    assert.equal(loaded.seed, 11);
    await using copy = await Sandbox.restore(loaded);
    assert.equal((await copy.runCode("(x, random.random())")).value, next, "same globals and the same stream after it");
    assert.equal(await copy.files.read("/home/user/f.txt"), "by code");
    assert.deepEqual([...(await copy.files.read("/tmp/host.bin", { format: "bytes" }))], [0, 1, 2, 255]);
  });

  it("a data file named outside the directory, through a link, or past the cap is refused", async () => {
    const dir = await persisted();
    const write = (j: Parameters<Parameters<typeof editJson>[1]>[0]) => j.engine.steps.find((s) => s.kind === "write") as { data: string };
    const cases: [string, (d: string) => void, RegExp][] = [
      ["../", (d) => editJson(d, (j) => (write(j).data = "../../etc/passwd")), /not one of its own \(data\/<n>\)/],
      ["absolute", (d) => editJson(d, (j) => (write(j).data = "/etc/passwd")), /not one of its own/],
      [
        "symlink",
        (d) => {
          const rel = (JSON.parse(fs.readFileSync(path.join(d, "snapshot.json"), "utf8")).engine.steps as { kind: string; data: string }[]).find((s) => s.kind === "write")!.data;
          fs.rmSync(path.join(d, rel));
          fs.symlinkSync("/etc/passwd", path.join(d, rel));
        },
        /symbolic link/,
      ],
      ["too big", (d) => fs.writeFileSync(path.join(d, "data", "0"), Buffer.alloc(9 * 1024 * 1024)), /more than the \d+ it may/],
      ["unknown engine", (d) => editJson(d, (j) => (j.engineId = "no-such-engine")), /engine "no-such-engine", which this build does not have/],
      ["bad options", (d) => editJson(d, (j) => (j.options.limits = { memoryMb: -1 })), /options saved .* no longer resolve/],
      ["not JSON", (d) => fs.writeFileSync(path.join(d, "snapshot.json"), "{"), /is not a saved snapshot/],
    ];
    for (const [what, harm, why] of cases) {
      const copy = tmp();
      fs.cpSync(dir, copy, { recursive: true });
      harm(copy);
      await assert.rejects(SandboxSnapshot.load(copy), (e: unknown) => e instanceof SavedStateError && why.test(e.message), what);
    }
  });

  it("tier auto on the nano tier: written as kind auto-nano around its nano history, loaded back on nano; a hostile wrapper or history is refused", async () => {
    // An image that is never built: nothing here starts the heavy side.
    await using sb = await Sandbox.create({ tier: "auto", backend: "gvisor", packages: ["agentbox-test-never-built"], seed: 4, pool: false });
    await sb.runCode("import random\nx = 41\nopen('/home/user/f.txt', 'w').write('by code')");
    await sb.files.write("/tmp/host.bin", new Uint8Array([9, 8]));
    const dir = tmp();
    await (await sb.snapshot()).persist(dir);
    const saved = JSON.parse(fs.readFileSync(path.join(dir, "snapshot.json"), "utf8"));
    assert.deepEqual([saved.engineId, saved.engine.kind, saved.engine.nano.kind], ["auto", "auto-nano", "replay"]);
    const next = (await sb.runCode("(x, random.random())")).value;
    await using copy = await Sandbox.restore(await SandboxSnapshot.load(dir));
    assert.deepEqual(copy.info, { tier: "auto", current: "nano" });
    const r = await copy.runCode("(x, random.random())");
    assert.deepEqual([r.tier, r.value], ["nano", next]);
    assert.equal(await copy.files.read("/home/user/f.txt"), "by code");
    assert.deepEqual([...(await copy.files.read("/tmp/host.bin", { format: "bytes" }))], [9, 8]);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const cases: [string, (j: any) => void, RegExp][] = [
      ["an extra key", (j) => (j.engine.extra = 1), /saved tier "auto" sandbox .* is not valid/],
      ["no nano history", (j) => delete j.engine.nano, /saved tier "auto" sandbox .* is not valid: nano/],
      ["a data file outside", (j) => (j.engine.nano.steps.find((s: { kind: string }) => s.kind === "write").data = "../../etc/passwd"), /not one of its own/],
      ["an unknown kind", (j) => (j.engine.kind = "auto-other"), /names no heavy backend/],
    ];
    for (const [what, harm, why] of cases) {
      const copyDir = tmp();
      fs.cpSync(dir, copyDir, { recursive: true });
      editJson(copyDir, harm);
      await assert.rejects(SandboxSnapshot.load(copyDir), (e: unknown) => e instanceof SavedStateError && why.test(e.message), what);
    }
  });

  it("a gVisor checkpoint is refused when its image is not the one this host has", async () => {
    const dir = tmp();
    fs.mkdirSync(path.join(dir, "checkpoint"));
    const saved = { kind: "gvisor-checkpoint", path: "checkpoint", image: { id: "0".repeat(16), createdAt: "2020-01-01T00:00:00.000Z" }, memoryMb: 512, cpus: 1, diskMb: 512 };
    fs.writeFileSync(path.join(dir, "snapshot.json"), JSON.stringify({ version: 1, engineId: "heavy-gvisor", seed: 1, options: { tier: "heavy", backend: "gvisor" }, engine: saved }));
    await assert.rejects(SandboxSnapshot.load(dir), (e: unknown) => e instanceof SavedStateError && /image/.test(e.message));
  });

  it("a sandbox with network secrets is not written to disk", async () => {
    await using sb = await Sandbox.create({ language: "python", pool: false, network: { allow: ["example.com"], secrets: [{ name: "TOKEN", value: "s3cret", hosts: ["example.com"] }] } });
    const snap = await sb.snapshot();
    const dir = tmp();
    await assert.rejects(snap.persist(dir), (e: unknown) => e instanceof SavedStateError && /network secrets/.test(e.message));
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});
