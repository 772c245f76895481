// Host directories granted as mounts: read-only by default, and no way out of them.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-mount-"));
  fs.mkdirSync(path.join(root, "shared"));
  fs.writeFileSync(path.join(root, "shared", "in.txt"), "hello from host");
  fs.writeFileSync(path.join(root, "secret.txt"), "outside the mount");
  fs.symlinkSync(path.join(root, "secret.txt"), path.join(root, "shared", "abs-link"));
  fs.symlinkSync("../secret.txt", path.join(root, "shared", "rel-link"));
  fs.symlinkSync("/etc/passwd", path.join(root, "shared", "passwd-link"));
  fs.mkdirSync(path.join(root, "rw"));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

describe("mounts", () => {
  it("a read-only mount can be read and not written", async () => {
    await using sb = await Sandbox.create({ mounts: [{ hostPath: path.join(root, "shared"), guestPath: "/mnt/shared" }] });
    assert.equal((await sb.runCode("open('/mnt/shared/in.txt').read()")).value, "'hello from host'");
    const w = await sb.runCode("open('/mnt/shared/new.txt', 'w').write('x')");
    assert.match(w.error?.name ?? "", /OSError/);
    assert.match(w.error?.message ?? "", /Read-only/i);
    assert.equal(fs.existsSync(path.join(root, "shared", "new.txt")), false);
    const rm = await sb.runCode("import os\nos.remove('/mnt/shared/in.txt')");
    assert.ok(rm.error);
    assert.equal(fs.readFileSync(path.join(root, "shared", "in.txt"), "utf8"), "hello from host");
  });

  it("symlinks and .. do not lead out of the mount", async () => {
    await using sb = await Sandbox.create({ mounts: [{ hostPath: path.join(root, "shared"), guestPath: "/mnt/shared" }] });
    for (const p of ["/mnt/shared/abs-link", "/mnt/shared/rel-link", "/mnt/shared/passwd-link", "/mnt/shared/../secret.txt", "/mnt/shared/../../secret.txt"]) {
      const r = await sb.runCode(`open(${JSON.stringify(p)}).read()`);
      assert.ok(r.error, `${p} was readable: ${r.value}`);
      assert.doesNotMatch(r.value ?? "", /outside the mount|root:/);
    }
  });

  it("a read-write mount writes through to the host directory", async () => {
    await using sb = await Sandbox.create({ mounts: [{ hostPath: path.join(root, "rw"), guestPath: "/mnt/rw", readOnly: false }] });
    const r = await sb.runCode("open('/mnt/rw/out.txt', 'w').write('written by guest')");
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(fs.readFileSync(path.join(root, "rw", "out.txt"), "utf8"), "written by guest");
    const link = await sb.runCode("import os\nos.symlink('/etc/passwd', '/mnt/rw/evil')");
    assert.ok(link.error, "no symlinks planted in host directories");
    assert.equal(fs.existsSync(path.join(root, "rw", "evil")), false);
  });

  it("what the guest adds to a read-write mount counts against the VFS quotas", async () => {
    const dir = path.join(root, "rw-quota");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "existing.bin"), Buffer.alloc(300_000)); // already there: free
    await using sb = await Sandbox.create({
      limits: { vfsBytes: 200_000, vfsFiles: 5 },
      mounts: [{ hostPath: dir, guestPath: "/mnt/q", readOnly: false }],
    });
    // Rewriting a file in place ("w" truncates) does not add up.
    for (let i = 0; i < 5; i++) {
      const r = await sb.runCode("open('/mnt/q/a.bin', 'wb').write(b'x' * 150_000)");
      assert.equal(r.error, undefined, r.error?.traceback);
    }
    const full = await sb.runCode("with open('/mnt/q/b.bin', 'wb') as f:\n    f.write(b'y' * 100_000)");
    assert.equal(full.limitHit, "vfsBytes");
    assert.match(full.error?.name ?? "", /OSError/);
    assert.ok(fs.statSync(path.join(dir, "b.bin")).size <= 50_000, "the write past the quota did not reach the host disk");
    // Deleting gives the room back.
    const freed = await sb.runCode("import os\nos.remove('/mnt/q/a.bin')\nos.remove('/mnt/q/b.bin')\nopen('/mnt/q/c.bin', 'wb').write(b'z' * 150_000)");
    assert.equal(freed.error, undefined, freed.error?.traceback);
    // File count: the quota is shared with the in-memory VFS.
    const many = await sb.runCode("import os\nfor i in range(10):\n    open(f'/mnt/q/f{i}', 'w').close()");
    assert.equal(many.limitHit, "vfsFiles");
    assert.ok(fs.readdirSync(dir).length <= 7, `created ${fs.readdirSync(dir).length} entries`);
  });
});
