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
});
