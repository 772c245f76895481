// The microVM backend's boot artefacts, built from Debian packages without installing anything
// on the host: the guest kernel (the ELF vmlinux unpacked from the cloud kernel's vmlinuz, since
// the compressed image's decompressor hangs under these accelerators; booted through PVH), an
// initramfs (static busybox, the virtio modules in load order, the guest init scripts) and an
// ext4 image of the heavy tier's root tree (`mke2fs -d`, no loop mounts). Kernels are cached
// per package version; an artefact set per image id and recipe hash. Read-only at run time.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { ImageBuildError, TierUnavailableError } from "../../errors.js";
import { cacheDir } from "../cache.js";
import { buildImage, duBytes, findImage, imageBuildCommand, imageLabel, type ImageInfo } from "../heavy/image.js";
import type { ImagePreset } from "../heavy/presets.js";

const run = promisify(execFile);

/** Changes whenever the steps below change what lands in an artefact set. */
const BUILD_VERSION = 1;
const GUEST_DIR = fileURLToPath(new URL("../../../guest/microvm/", import.meta.url));
const GUEST_FILES = ["init", "init.py"];
/** The meta-package naming the current cloud kernel (small, virtio drivers, no hardware zoo). */
const KERNEL_META = process.env.AGENTBOX_MICROVM_KERNEL_PACKAGE ?? "linux-image-cloud-amd64";
/** Modules the guest needs, in the order busybox insmod loads them (dependencies first). */
const MODULES = ["virtio", "virtio_ring", "virtio_mmio", "virtio_console", "virtio_blk", "virtio-rng"];
const LZ4_LEGACY_MAGIC = Buffer.from([0x02, 0x21, 0x4c, 0x18]);

export interface MicrovmArtefacts {
  /** Recipe hash: the artefact set's name in the cache. */
  id: string;
  /** The heavy-tier image the root disk was made from. */
  imageId: string;
  kernelPackage: string;
  /** ELF kernel, booted through PVH. */
  vmlinux: string;
  initramfs: string;
  /** ext4 root disk, attached read-only. */
  rootDisk: string;
  createdAt: string;
}

export interface MicrovmBuildOptions {
  /** The image preset (presets.ts); `packages` come on top. */
  preset?: ImagePreset;
  packages?: string[];
  onProgress?: (line: string) => void;
  force?: boolean;
}

export function microvmDir(): string {
  return path.join(cacheDir(), "microvm");
}

/** Hash of everything in the artefact set besides the image and the kernel. */
function recipeHash(imageId: string): string {
  const h = createHash("sha256");
  h.update(JSON.stringify({ v: BUILD_VERSION, imageId, kernel: KERNEL_META, modules: MODULES, arch: process.arch }));
  for (const f of GUEST_FILES) h.update(fs.readFileSync(path.join(GUEST_DIR, f)));
  return h.digest("hex").slice(0, 16);
}

function readManifest(dir: string): MicrovmArtefacts | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8")) as Omit<MicrovmArtefacts, "vmlinux" | "initramfs" | "rootDisk"> & { kernelDir: string };
    const a: MicrovmArtefacts = {
      id: m.id,
      imageId: m.imageId,
      kernelPackage: m.kernelPackage,
      vmlinux: path.join(m.kernelDir, "vmlinux"),
      initramfs: path.join(dir, "initramfs.cpio.gz"),
      rootDisk: path.join(dir, "root.ext4"),
      createdAt: m.createdAt,
    };
    return [a.vmlinux, a.initramfs, a.rootDisk].every((f) => fs.existsSync(f)) ? a : undefined;
  } catch {
    return undefined;
  }
}

/** The built artefacts for the image with these extra packages, or undefined. */
export function findMicrovmArtefacts(packages: readonly string[] = []): MicrovmArtefacts | undefined {
  const image = findImage(packages);
  if (!image) return undefined;
  return readManifest(path.join(microvmDir(), recipeHash(image.id)));
}

/** The built artefacts; a clear error saying how to build them when there are none. */
export function requireMicrovmArtefacts(packages: readonly string[] = []): MicrovmArtefacts {
  const found = findMicrovmArtefacts(packages);
  if (found) return found;
  throw new TierUnavailableError(`the heavy tier's image ${imageLabel(packages)} is not built; run \`${imageBuildCommand(packages)}\` (the microVM's kernel and disk are made from it on first use)`);
}

const building = new Map<string, Promise<MicrovmArtefacts>>();

/** Build (or find in the cache) the image and the microVM artefacts made from it. */
export async function buildMicrovmArtefacts(opts: MicrovmBuildOptions = {}): Promise<MicrovmArtefacts> {
  const progress = opts.onProgress ?? (() => undefined);
  const image = await buildImage({ preset: opts.preset ?? "base", packages: opts.packages ?? [], onProgress: progress, force: opts.force ?? false });
  const id = recipeHash(image.id);
  if (!opts.force) {
    const found = readManifest(path.join(microvmDir(), id));
    if (found) return found;
  }
  let p = building.get(id);
  if (!p) {
    p = doBuild(id, image, progress).finally(() => building.delete(id));
    building.set(id, p);
  }
  return p;
}

async function doBuild(id: string, image: ImageInfo, progress: (line: string) => void): Promise<MicrovmArtefacts> {
  if (process.platform !== "linux" || process.arch !== "x64") throw new TierUnavailableError("the microVM backend is built for x86-64 Linux hosts only");
  for (const [tool, pkg] of [["apt-get", "apt"], ["dpkg-deb", "dpkg"], ["lz4", "lz4"], ["mke2fs", "e2fsprogs"]] as const) {
    if (!(await has(tool))) throw new TierUnavailableError(`building the microVM artefacts needs \`${tool}\`; install it with \`sudo apt-get install ${pkg}\``);
  }
  const t0 = Date.now();
  fs.mkdirSync(microvmDir(), { recursive: true });
  const work = path.join(microvmDir(), `.build-${id}-${randomBytes(4).toString("hex")}`);
  fs.mkdirSync(work);
  try {
    const kernel = await buildKernel(progress);
    progress("making the initramfs (busybox-static, virtio modules, guest init)");
    const busybox = await debianFile("busybox-static", "bin/busybox", work);
    writeInitramfs(path.join(work, "initramfs.cpio.gz"), busybox, kernel.dir);
    progress(`making the ext4 root disk from image ${image.id} (mke2fs -d)`);
    await makeRootDisk(image.rootfs, path.join(work, "root.ext4"));
    const manifest = { id, imageId: image.id, kernelPackage: kernel.pkg, kernelDir: kernel.dir, createdAt: new Date().toISOString() };
    fs.writeFileSync(path.join(work, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
    const dest = path.join(microvmDir(), id);
    fs.rmSync(dest, { recursive: true, force: true });
    fs.renameSync(work, dest);
    progress(`microVM artefacts ${id} built in ${((Date.now() - t0) / 1000).toFixed(1)} s (kernel ${kernel.pkg})`);
    const a = readManifest(dest);
    if (!a) throw new ImageBuildError("the microVM artefacts vanished right after their build");
    return a;
  } catch (e) {
    fs.rmSync(work, { recursive: true, force: true });
    if (e instanceof ImageBuildError || e instanceof TierUnavailableError) throw e;
    throw new ImageBuildError(`microVM artefact build failed: ${(e as Error).message}`, { cause: e });
  }
}

/** Download the current cloud kernel package (cached per version): vmlinux and the modules. */
async function buildKernel(progress: (line: string) => void): Promise<{ pkg: string; dir: string }> {
  const pkg = await resolveKernelPackage();
  const dir = path.join(microvmDir(), "kernels", pkg.replace(/[^A-Za-z0-9.+_-]/g, "_"));
  if (fs.existsSync(path.join(dir, "vmlinux")) && fs.existsSync(path.join(dir, "modules", "order"))) return { pkg, dir };
  progress(`downloading the guest kernel ${pkg}`);
  const tmp = `${dir}.tmp-${randomBytes(4).toString("hex")}`;
  fs.mkdirSync(tmp, { recursive: true });
  try {
    const tree = path.join(tmp, "tree");
    await unpackDebian(pkg, tmp, tree);
    const vmlinuz = fs.readdirSync(path.join(tree, "boot")).find((f) => f.startsWith("vmlinuz-"));
    if (!vmlinuz) throw new ImageBuildError(`${pkg} has no /boot/vmlinuz-*`);
    progress("unpacking the ELF vmlinux from vmlinuz (LZ4)");
    await extractVmlinux(path.join(tree, "boot", vmlinuz), path.join(tmp, "vmlinux"));
    const modDir = path.join(tmp, "modules");
    fs.mkdirSync(modDir);
    const found = findModules(path.join(tree, "lib", "modules"));
    for (const m of MODULES) {
      const src = found.get(m);
      if (!src) throw new ImageBuildError(`kernel module ${m}.ko is missing from ${pkg}`);
      fs.copyFileSync(src, path.join(modDir, `${m}.ko`));
    }
    fs.writeFileSync(path.join(modDir, "order"), loadOrder(modDir).join(" ") + "\n");
    fs.rmSync(tree, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    return { pkg, dir };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

async function resolveKernelPackage(): Promise<string> {
  // `apt-cache depends` names the versioned package the meta-package points at.
  const out = await exec("apt-cache", ["depends", "--no-recommends", "--no-suggests", KERNEL_META]);
  const dep = /Depends: (linux-image-\S+)/.exec(out)?.[1];
  if (dep) return dep;
  if (/^linux-image-\d/.test(KERNEL_META)) return KERNEL_META;
  throw new ImageBuildError(`cannot resolve the kernel package behind ${KERNEL_META} (is apt configured? run \`apt-get update\`)`);
}

async function unpackDebian(pkg: string, work: string, into: string): Promise<void> {
  const debs = path.join(work, `debs-${pkg}`);
  fs.mkdirSync(debs, { recursive: true });
  const sandboxUser = process.getuid?.() === 0 ? ["-o", "APT::Sandbox::User=root"] : [];
  try {
    await exec("apt-get", ["download", "-q", ...sandboxUser, pkg], { cwd: debs });
  } catch (e) {
    throw new ImageBuildError(`${(e as Error).message}\n(run \`apt-get update\` if the package lists are stale)`);
  }
  const deb = fs.readdirSync(debs).find((f) => f.endsWith(".deb"));
  if (!deb) throw new ImageBuildError(`apt-get download ${pkg} fetched nothing`);
  fs.mkdirSync(into, { recursive: true });
  await exec("dpkg-deb", ["-x", path.join(debs, deb), into]);
  fs.rmSync(debs, { recursive: true, force: true });
}

/** One file out of a Debian package, copied into `work`. */
async function debianFile(pkg: string, file: string, work: string): Promise<string> {
  const tree = path.join(work, `pkg-${pkg}`);
  await unpackDebian(pkg, work, tree);
  const src = [file, `usr/${file}`].map((f) => path.join(tree, f)).find((f) => fs.existsSync(f));
  if (!src) throw new ImageBuildError(`${pkg} has no ${file}`);
  const dest = path.join(work, path.basename(file));
  fs.copyFileSync(src, dest);
  fs.rmSync(tree, { recursive: true, force: true });
  return dest;
}

/** vmlinuz is a boot stub followed by the LZ4 (legacy frame) compressed ELF kernel. */
async function extractVmlinux(vmlinuz: string, dest: string): Promise<void> {
  const data = fs.readFileSync(vmlinuz);
  const at = data.indexOf(LZ4_LEGACY_MAGIC);
  if (at < 0) throw new ImageBuildError(`${path.basename(vmlinuz)} holds no LZ4 stream; only LZ4-compressed kernels are supported`);
  const packed = `${dest}.lz4`;
  fs.writeFileSync(packed, data.subarray(at));
  try {
    // lz4 stops at the end of its frame and complains about the trailing bytes: judge by the ELF.
    await run("lz4", ["-d", "-f", packed, dest]).catch(() => undefined);
  } finally {
    fs.rmSync(packed, { force: true });
  }
  const head = Buffer.alloc(4);
  const fd = fs.openSync(dest, "r");
  try {
    fs.readSync(fd, head, 0, 4, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (!head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) throw new ImageBuildError("the kernel unpacked from vmlinuz is not an ELF file");
}

function findModules(root: string): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ko")) found.set(e.name.slice(0, -3), p);
    }
  };
  walk(root);
  return found;
}

/** MODULES sorted so each comes after what its `.modinfo` `depends=` names. */
function loadOrder(modDir: string): string[] {
  const deps = new Map<string, string[]>();
  for (const m of MODULES) {
    const text = fs.readFileSync(path.join(modDir, `${m}.ko`)).toString("latin1");
    const d = /\0depends=([A-Za-z0-9_,-]*)\0/.exec(text)?.[1] ?? "";
    deps.set(m, d.split(",").filter(Boolean));
  }
  const order: string[] = [];
  const visit = (m: string, stack: string[]) => {
    if (order.includes(m)) return;
    if (stack.includes(m)) throw new ImageBuildError(`kernel modules depend on each other in a cycle: ${[...stack, m].join(" -> ")}`);
    const ds = deps.get(m.replace(/-/g, "_")) ?? deps.get(m) ?? [];
    for (const d of ds) {
      const name = MODULES.find((x) => x.replace(/-/g, "_") === d.replace(/-/g, "_"));
      if (!name) throw new ImageBuildError(`kernel module ${m} needs ${d}, which is not in the initramfs`);
      visit(name, [...stack, m]);
    }
    order.push(m);
  };
  for (const m of MODULES) visit(m, []);
  return order;
}

/** A gzipped newc cpio archive: busybox, its sh link, the modules, the init scripts. */
function writeInitramfs(dest: string, busybox: string, kernelDir: string): void {
  const cpio = new CpioWriter();
  for (const d of ["bin", "dev", "proc", "sys", "newroot", "modules"]) cpio.dir(d);
  cpio.charDevice("dev/console", 5, 1);
  cpio.file("bin/busybox", fs.readFileSync(busybox), 0o755);
  cpio.symlink("bin/sh", "busybox");
  const mods = path.join(kernelDir, "modules");
  for (const f of fs.readdirSync(mods).sort()) cpio.file(`modules/${f}`, fs.readFileSync(path.join(mods, f)), 0o644);
  cpio.file("init", fs.readFileSync(path.join(GUEST_DIR, "init")), 0o755);
  cpio.file("init.py", fs.readFileSync(path.join(GUEST_DIR, "init.py")), 0o644);
  fs.writeFileSync(dest, gzipSync(cpio.finish(), { level: 6 }));
}

/** Writer of the "newc" cpio format the kernel unpacks as an initramfs (fixed times, owner root). */
class CpioWriter {
  private readonly parts: Buffer[] = [];
  private ino = 1;

  dir(name: string): void {
    this.entry(name, 0o040755, Buffer.alloc(0));
  }
  file(name: string, data: Buffer, mode: number): void {
    this.entry(name, 0o100000 | mode, data);
  }
  symlink(name: string, target: string): void {
    this.entry(name, 0o120777, Buffer.from(target));
  }
  charDevice(name: string, major: number, minor: number): void {
    this.entry(name, 0o020600, Buffer.alloc(0), major, minor);
  }
  finish(): Buffer {
    this.entry("TRAILER!!!", 0, Buffer.alloc(0));
    return Buffer.concat(this.parts);
  }

  private entry(name: string, mode: number, data: Buffer, rdevMajor = 0, rdevMinor = 0): void {
    const nameBytes = Buffer.from(`${name}\0`);
    const fields = [this.ino++, mode, 0, 0, mode & 0o040000 ? 2 : 1, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0];
    const header = Buffer.from("070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join(""));
    this.parts.push(header, nameBytes, pad4(header.length + nameBytes.length), data, pad4(data.length));
  }
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

async function makeRootDisk(rootfs: string, dest: string): Promise<void> {
  const bytes = duBytes(rootfs);
  // Room for metadata (inodes, directories, block maps); the disk is read-only at run time.
  const sizeMb = Math.ceil((bytes * 1.25) / 2 ** 20) + 48;
  await exec("mke2fs", ["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "agentbox", "-d", rootfs, dest, `${sizeMb}M`]);
}

async function has(cmd: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v ${cmd}`], { env: { PATH: `${process.env.PATH ?? ""}:/usr/sbin:/sbin` } });
    return true;
  } catch {
    return false;
  }
}

async function exec(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const r = await run(cmd, args, {
      cwd: opts.cwd,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, PATH: `${process.env.PATH ?? ""}:/usr/sbin:/sbin`, LC_ALL: "C", DEBIAN_FRONTEND: "noninteractive" },
    });
    return r.stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    const detail = (err.stderr ?? "").trim().split("\n").filter((l) => !l.startsWith("W:")).slice(-6).join("\n");
    throw new ImageBuildError(`\`${cmd} ${args.slice(0, 6).join(" ")}${args.length > 6 ? " ..." : ""}\` failed${detail ? `:\n${detail}` : `: ${err.message}`}`);
  }
}
