// Host directories granted as mounts to JavaScript sandboxes: read-only by default, no way out of
// them (.., absolute and relative symlinks, symlinked directories), no symlinks planted, and what
// the guest adds to a read-write mount counted against the VFS quotas.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { FileSystemError, InvalidOptionsError, Sandbox } from "../../src/index.js";
import "../helpers.js";

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-jsmount-"));
  fs.mkdirSync(path.join(root, "shared", "sub"), { recursive: true });
  fs.writeFileSync(path.join(root, "shared", "in.txt"), "hello from host");
  fs.writeFileSync(path.join(root, "shared", "sub", "deep.txt"), "deep");
  fs.writeFileSync(path.join(root, "secret.txt"), "outside the mount");
  fs.mkdirSync(path.join(root, "outside-dir"));
  fs.writeFileSync(path.join(root, "outside-dir", "x.txt"), "outside the mount");
  fs.symlinkSync(path.join(root, "secret.txt"), path.join(root, "shared", "abs-link"));
  fs.symlinkSync("../secret.txt", path.join(root, "shared", "rel-link"));
  fs.symlinkSync("/etc/passwd", path.join(root, "shared", "passwd-link"));
  fs.symlinkSync(path.join(root, "outside-dir"), path.join(root, "shared", "dir-link"));
  fs.symlinkSync("sub/deep.txt", path.join(root, "shared", "inner-link"));
  fs.mkdirSync(path.join(root, "rw"));
  fs.symlinkSync(path.join(root, "outside-dir"), path.join(root, "rw", "dir-link"));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

const js = (hostPath: string, guestPath: string, readOnly?: boolean) => ({ language: "javascript" as const, mounts: [{ hostPath, guestPath, ...(readOnly === undefined ? {} : { readOnly }) }] });

describe("mounts (javascript)", () => {
  it("a read-only mount can be read (guest fs and sb.files) and not written", async () => {
    await using sb = await Sandbox.create(js(path.join(root, "shared"), "/mnt/shared"));
    const r = await sb.runCode("import fs from 'fs';\n[fs.readFileSync('/mnt/shared/in.txt', 'utf8'), fs.readdirSync('/mnt/shared'), fs.readFileSync('/mnt/shared/inner-link', 'utf8'), fs.readdirSync('/mnt')]");
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(r.value, '["hello from host",["abs-link","dir-link","in.txt","inner-link","passwd-link","rel-link","sub"],"deep",["shared"]]');
    assert.equal(await sb.files.read("/mnt/shared/sub/deep.txt"), "deep");
    assert.deepEqual((await sb.files.list("/mnt/shared")).map((e) => `${e.name}:${e.type}`), ["abs-link:symlink", "dir-link:symlink", "in.txt:file", "inner-link:symlink", "passwd-link:symlink", "rel-link:symlink", "sub:dir"]);
    for (const code of ["fs.writeFileSync('/mnt/shared/new.txt', 'x')", "fs.appendFileSync('/mnt/shared/in.txt', 'x')", "fs.unlinkSync('/mnt/shared/in.txt')", "fs.mkdirSync('/mnt/shared/d')", "fs.rmSync('/mnt/shared/sub', { recursive: true })", "fs.renameSync('/mnt/shared/in.txt', '/mnt/shared/moved.txt')"]) {
      const w = await sb.runCode(code);
      assert.match(w.error?.message ?? "", /^EROFS/, code);
    }
    await assert.rejects(sb.files.write("/mnt/shared/host-new.txt", "x"), /read-only/);
    await assert.rejects(sb.files.remove("/mnt/shared/in.txt"), /read-only/);
    assert.equal(fs.existsSync(path.join(root, "shared", "new.txt")), false);
    assert.equal(fs.readFileSync(path.join(root, "shared", "in.txt"), "utf8"), "hello from host");
    assert.deepEqual(fs.readdirSync(path.join(root, "shared")).sort(), ["abs-link", "dir-link", "in.txt", "inner-link", "passwd-link", "rel-link", "sub"]);
  });

  it("symlinks and .. do not lead out of the mount", async () => {
    await using sb = await Sandbox.create(js(path.join(root, "shared"), "/mnt/shared"));
    for (const p of ["/mnt/shared/abs-link", "/mnt/shared/rel-link", "/mnt/shared/passwd-link", "/mnt/shared/dir-link/x.txt", "/mnt/shared/../secret.txt", "/mnt/shared/../../secret.txt", "/mnt/shared/sub/../../secret.txt"]) {
      const r = await sb.runCode(`import fs from 'fs';\nfs.readFileSync(${JSON.stringify(p)}, 'utf8')`);
      assert.ok(r.error, `${p} was readable: ${r.value}`);
      assert.doesNotMatch(r.value ?? "", /outside the mount|root:/);
      await assert.rejects(sb.files.read(p), `${p} via sb.files`);
    }
    const listed = await sb.runCode("import fs from 'fs';\ntry { fs.readdirSync('/mnt/shared/dir-link') } catch (e) { e.code }");
    assert.equal(listed.value, '"EACCES"');
    assert.equal((await sb.runCode("fs.existsSync('/mnt/shared/abs-link')")).value, "false");
  });

  it("a read-write mount writes through to the host directory; no symlinks planted or followed out", async () => {
    await using sb = await Sandbox.create(js(path.join(root, "rw"), "/mnt/rw", false));
    const r = await sb.runCode("import fs from 'fs';\nfs.mkdirSync('/mnt/rw/d/e', { recursive: true });\nfs.writeFileSync('/mnt/rw/d/e/out.txt', 'written by guest');\nfs.renameSync('/mnt/rw/d/e/out.txt', '/mnt/rw/out.txt');\nfs.readdirSync('/mnt/rw')");
    assert.equal(r.error, undefined, r.error?.traceback);
    assert.equal(r.value, '["d","dir-link","out.txt"]');
    assert.equal(fs.readFileSync(path.join(root, "rw", "out.txt"), "utf8"), "written by guest");
    await sb.files.write("/mnt/rw/from-host-api.txt", "via sb.files");
    assert.equal(fs.readFileSync(path.join(root, "rw", "from-host-api.txt"), "utf8"), "via sb.files");
    await assert.rejects(sb.files.makeDir("/mnt/rw/from-host-api.txt"), (e: unknown) => e instanceof FileSystemError && e.errno === "EEXIST");
    await assert.rejects(sb.files.makeDir("/mnt/rw/from-host-api.txt/sub"), (e: unknown) => e instanceof FileSystemError && e.errno === "ENOTDIR");
    await sb.files.makeDir("/mnt/rw/d");
    // Writes through a symlinked directory that leads outside are refused.
    const out = await sb.runCode("try { fs.writeFileSync('/mnt/rw/dir-link/planted.txt', 'x'); 'written' } catch (e) { e.code }");
    assert.equal(out.value, '"EACCES"');
    assert.equal(fs.existsSync(path.join(root, "outside-dir", "planted.txt")), false);
    // The guest's fs has no symlink call; a rename between the VFS and the mount is EXDEV.
    assert.equal((await sb.runCode("typeof fs.symlinkSync")).value, '"undefined"');
    const x = await sb.runCode("fs.writeFileSync('/tmp/t', 'x');\ntry { fs.renameSync('/tmp/t', '/mnt/rw/t') } catch (e) { e.code }");
    assert.equal(x.value, '"EXDEV"');
    const busy = await sb.runCode("try { fs.rmSync('/mnt', { recursive: true }) } catch (e) { e.code }");
    assert.equal(busy.value, '"EBUSY"');
    assert.ok(fs.existsSync(path.join(root, "rw", "out.txt")));
  });

  it("what the guest adds to a read-write mount counts against the VFS quotas", async () => {
    const dir = path.join(root, "rw-quota");
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, "existing.bin"), Buffer.alloc(300_000)); // already there: free
    await using sb = await Sandbox.create({ language: "javascript", limits: { vfsBytes: 200_000, vfsFiles: 5 }, mounts: [{ hostPath: dir, guestPath: "/mnt/q", readOnly: false }] });
    for (let i = 0; i < 5; i++) {
      const r = await sb.runCode("import fs from 'fs';\nfs.writeFileSync('/mnt/q/a.bin', new Uint8Array(150_000))");
      assert.equal(r.error, undefined, r.error?.traceback);
    }
    const full = await sb.runCode("fs.writeFileSync('/mnt/q/b.bin', new Uint8Array(100_000))");
    assert.equal(full.limitHit, "vfsBytes");
    assert.match(full.error?.message ?? "", /^ENOSPC/);
    assert.equal(fs.existsSync(path.join(dir, "b.bin")), false, "the write past the quota did not reach the host disk");
    // The in-memory VFS shares the same quota.
    assert.equal((await sb.runCode("fs.writeFileSync('/tmp/m.bin', new Uint8Array(60_000))")).limitHit, "vfsBytes");
    const freed = await sb.runCode("fs.unlinkSync('/mnt/q/a.bin');\nfs.writeFileSync('/mnt/q/c.bin', new Uint8Array(150_000))");
    assert.equal(freed.error, undefined, freed.error?.traceback);
    const many = await sb.runCode("for (let i = 0; i < 10; i++) fs.writeFileSync('/mnt/q/f' + i, '')");
    assert.equal(many.limitHit, "vfsFiles");
    assert.ok(fs.readdirSync(dir).length <= 7, `created ${fs.readdirSync(dir).length} entries`);
  });

  it("the worker is granted the mount paths only: the rest of the host stays unreadable", async () => {
    await assert.rejects(Sandbox.create(js(path.join(root, "missing"), "/mnt/x")), (e: unknown) => e instanceof InvalidOptionsError && /mounts\.0\.hostPath/.test(e.message));
    await using sb = await Sandbox.create(js(path.join(root, "shared"), "/mnt/shared"));
    const pid = sb.pid!;
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const real = fs.realpathSync(path.join(root, "shared"));
    assert.ok(cmdline.includes(`--allow-fs-read=${real}`), cmdline.join(" "));
    assert.equal(cmdline.filter((a) => a.startsWith("--allow-fs-write")).length, 0, "a read-only mount grants no write access");
    assert.ok(!cmdline.some((a) => a === `--allow-fs-read=${root}`));
  });
});
