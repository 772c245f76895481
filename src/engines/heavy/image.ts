// Heavy-tier images: a Debian root file system (python3, a shell, coreutils, extra packages on
// request) plus the guest agent, built from the host's apt configuration without installing
// anything on the host: apt resolves the dependency closure against an empty package status,
// `apt-get download` fetches the .debs and `dpkg-deb -x` unpacks them. Images are cached under
// the user's cache directory, keyed by a hash of their recipe, and are read-only at run time.
// Backend-neutral: a microVM backend turns the same tree into a disk image.
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ImageBuildError, TierUnavailableError } from "../../errors.js";
import { cacheDir } from "../cache.js";
import { writeOciBundle } from "./oci.js";
import { imageBuildArgs, imagePackages, warmImports, type ImagePreset } from "./presets.js";

const run = promisify(execFile);

/** Changes whenever the build steps below change what lands in an image. */
const BUILD_VERSION = 3;
/** What every image holds; extra packages come on top. */
export const BASE_PACKAGES = ["bash", "coreutils", "dash", "diffutils", "findutils", "grep", "gzip", "procps", "python3", "sed", "tar", "usr-is-merged"];
const GUEST_DIR = fileURLToPath(new URL("../../../guest/", import.meta.url));
export const AGENT_GUEST_PATH = "/opt/agentbox/agent.py";
/** The modules the REPL imports before its first run (presets.ts warmImports), read by the agent. */
const WARM_PATH = "/opt/agentbox/warm.json";
/** matplotlib's font cache, made at build time (agent.py copies it for the REPL). */
const MATPLOTLIB_CACHE = "/opt/agentbox/matplotlib";
/** Mount points the engines use; they must exist because the root is read-only. */
const MOUNT_POINTS = ["proc", "dev", "sys", "tmp", "home/user", "run", "var/tmp"];

export interface ImageInfo {
  /** Recipe hash: the image's name in the cache. */
  id: string;
  /** Root file system directory. */
  rootfs: string;
  /** Extra packages asked for (beyond the base set). */
  packages: string[];
  /** Every Debian package in the image, as name=version. */
  resolved: string[];
  sizeBytes: number;
  createdAt: string;
}

export interface BuildOptions {
  /** A named package set (presets.ts); `packages` come on top of it. Default "base". */
  preset?: ImagePreset;
  packages?: string[];
  /** Progress lines (the CLI prints them on stderr). */
  onProgress?: (line: string) => void;
  /** Rebuild even when a cached image exists. */
  force?: boolean;
}

const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]{0,99}$/;

export function imagesDir(): string {
  return path.join(cacheDir(), "images");
}

function normalizePackages(packages: readonly string[] = []): string[] {
  for (const p of packages) {
    if (!PACKAGE_NAME.test(p)) throw new ImageBuildError(`${JSON.stringify(p)} is not a Debian package name`);
  }
  return [...new Set(packages)].filter((p) => !BASE_PACKAGES.includes(p)).sort();
}

/** The recipe hash of an image with these extra packages. */
export function imageId(packages: readonly string[] = []): string {
  const h = createHash("sha256");
  const extra = normalizePackages(packages);
  h.update(JSON.stringify({ v: BUILD_VERSION, base: BASE_PACKAGES, extra, warm: warmImports(extra), arch: process.arch }));
  for (const f of ["agent.py", "display.py", "statx-shim.c"]) h.update(fs.readFileSync(path.join(GUEST_DIR, f)));
  return h.digest("hex").slice(0, 16);
}

function readInfo(dir: string): ImageInfo | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8")) as Omit<ImageInfo, "rootfs">;
    return { ...m, rootfs: path.join(dir, "rootfs") };
  } catch {
    return undefined;
  }
}

/** The built image for these extra packages, or undefined. */
export function findImage(packages: readonly string[] = []): ImageInfo | undefined {
  return readInfo(path.join(imagesDir(), imageId(packages)));
}

/** The built image for these packages; a clear error saying how to build it when there is none. */
export function requireImage(packages: readonly string[] = []): ImageInfo {
  const img = findImage(packages);
  if (img) return img;
  throw new TierUnavailableError(`the heavy tier's image ${imageLabel(packages)} is not built; run \`${imageBuildCommand(packages)}\``);
}

/** How an image is named in messages: its preset, or its extra packages. */
export function imageLabel(packages: readonly string[] = []): string {
  const args = imageBuildArgs(normalizePackages(packages));
  return args ? `(${args.replace(/^--/, "").replace(/ --/g, ", ")})` : "(base)";
}

/** The command that builds the image with these packages. */
export function imageBuildCommand(packages: readonly string[] = []): string {
  const args = imageBuildArgs(normalizePackages(packages));
  return `npx agentbox image build${args ? ` ${args}` : ""}`;
}

export function listImages(): ImageInfo[] {
  let names: string[];
  try {
    names = fs.readdirSync(imagesDir());
  } catch {
    return [];
  }
  return names
    .filter((n) => /^[0-9a-f]{16}$/.test(n))
    .map((n) => readInfo(path.join(imagesDir(), n)))
    .filter((i): i is ImageInfo => i !== undefined)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/** Remove a built image by id (or unique id prefix). Returns false when none matched. */
export function removeImage(idOrPrefix: string): boolean {
  if (!/^[0-9a-f]{1,16}$/.test(idOrPrefix)) return false;
  const matches = listImages().filter((i) => i.id.startsWith(idOrPrefix));
  if (matches.length !== 1) return false;
  fs.rmSync(path.join(imagesDir(), matches[0]!.id), { recursive: true, force: true });
  return true;
}

async function has(cmd: string): Promise<boolean> {
  try {
    await run("sh", ["-c", `command -v ${cmd}`]);
    return true;
  } catch {
    return false;
  }
}

const building = new Map<string, Promise<ImageInfo>>();

/** Build (or find in the cache) the image with these extra packages. */
export function buildImage(opts: BuildOptions = {}): Promise<ImageInfo> {
  let packages: string[];
  try {
    packages = normalizePackages(imagePackages(opts.preset ?? "base", opts.packages));
  } catch (e) {
    return Promise.reject(e as Error);
  }
  const id = imageId(packages);
  if (!opts.force) {
    const found = findImage(packages);
    if (found) return Promise.resolve(found);
  }
  let p = building.get(id);
  if (!p) {
    p = doBuild(id, packages, opts.onProgress ?? (() => undefined)).finally(() => building.delete(id));
    building.set(id, p);
  }
  return p;
}

async function doBuild(id: string, extra: string[], progress: (line: string) => void): Promise<ImageInfo> {
  if (process.platform !== "linux") throw new TierUnavailableError("heavy-tier images are built on Linux only");
  for (const tool of ["apt-get", "dpkg-deb"]) {
    if (!(await has(tool))) throw new TierUnavailableError(`building an image needs \`${tool}\` (a Debian or Ubuntu host: apt and dpkg)`);
  }
  fs.mkdirSync(imagesDir(), { recursive: true });
  const work = path.join(imagesDir(), `.build-${id}-${randomBytes(4).toString("hex")}`);
  const rootfs = path.join(work, "rootfs");
  const debs = path.join(work, "debs");
  fs.mkdirSync(rootfs, { recursive: true });
  fs.mkdirSync(debs);
  const t0 = Date.now();
  try {
    const wanted = [...BASE_PACKAGES, ...extra];
    progress(`resolving ${wanted.length} packages and their dependencies with apt`);
    const resolved = await resolvePackages(wanted, work);
    progress(`downloading ${resolved.length} packages`);
    await download(resolved, debs);
    const files = fs.readdirSync(debs).filter((f) => f.endsWith(".deb")).sort();
    if (files.length < resolved.length) throw new ImageBuildError(`apt-get download fetched ${files.length} of ${resolved.length} packages`);
    const alternatives: Alternative[] = [];
    for (let i = 0; i < files.length; i++) {
      if (i % 10 === 0 || i === files.length - 1) progress(`unpacking ${i + 1}/${files.length}: ${files[i]}`);
      const deb = path.join(debs, files[i]!);
      await exec("dpkg-deb", ["-x", deb, rootfs]);
      alternatives.push(...(await alternativesOf(deb)));
    }
    fs.rmSync(debs, { recursive: true, force: true });
    progress("finishing the root file system (merged /usr, users, alternatives, guest agent)");
    await finishRootfs(rootfs, alternatives, warmImports(extra), progress);
    const info: Omit<ImageInfo, "rootfs"> = {
      id,
      packages: extra,
      resolved: resolved.map((r) => `${r.name}=${r.version}`),
      sizeBytes: duBytes(rootfs),
      createdAt: new Date().toISOString(),
    };
    fs.writeFileSync(path.join(work, "manifest.json"), JSON.stringify(info, null, 2) + "\n");
    const dest = path.join(imagesDir(), id);
    fs.rmSync(dest, { recursive: true, force: true });
    fs.renameSync(work, dest);
    progress(`image ${id} built in ${((Date.now() - t0) / 1000).toFixed(1)} s (${(info.sizeBytes / 2 ** 20).toFixed(0)} MB)`);
    return { ...info, rootfs: path.join(dest, "rootfs") };
  } catch (e) {
    fs.rmSync(work, { recursive: true, force: true });
    if (e instanceof ImageBuildError || e instanceof TierUnavailableError) throw e;
    throw new ImageBuildError(`image build failed: ${(e as Error).message}`, { cause: e });
  }
}

async function exec(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const r = await run(cmd, args, { cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, LC_ALL: "C", DEBIAN_FRONTEND: "noninteractive" } });
    return r.stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    const detail = (err.stderr ?? "").trim().split("\n").filter((l) => !l.startsWith("W:")).slice(-6).join("\n");
    throw new ImageBuildError(`\`${cmd} ${args.slice(0, 6).join(" ")}${args.length > 6 ? " ..." : ""}\` failed${detail ? `:\n${detail}` : `: ${err.message}`}`);
  }
}

interface Resolved {
  name: string;
  version: string;
}

/** The full dependency closure, resolved by apt as if nothing were installed (no recommends). */
async function resolvePackages(wanted: string[], work: string): Promise<Resolved[]> {
  const status = path.join(work, "empty-status");
  fs.writeFileSync(status, "");
  const out = await exec("apt-get", ["-s", "-q", "-o", `Dir::State::Status=${status}`, "-o", "Debug::NoLocking=1", "--no-install-recommends", "install", ...wanted]);
  const pkgs: Resolved[] = [];
  for (const line of out.split("\n")) {
    const m = /^Inst (\S+) \((\S+) /.exec(line);
    if (m) pkgs.push({ name: m[1]!, version: m[2]! });
  }
  if (pkgs.length === 0) throw new ImageBuildError("apt resolved no packages; is the host's apt configured (`apt-get update`)?");
  return pkgs;
}

async function download(pkgs: Resolved[], dir: string): Promise<void> {
  const sandboxUser = process.getuid?.() === 0 ? ["-o", "APT::Sandbox::User=root"] : [];
  try {
    await exec("apt-get", ["download", "-q", ...sandboxUser, ...pkgs.map((p) => `${p.name}=${p.version}`)], { cwd: dir });
  } catch (e) {
    throw new ImageBuildError(`${(e as Error).message}\n(run \`apt-get update\` if the package lists are stale)`);
  }
}

async function finishRootfs(root: string, alternatives: readonly Alternative[], warm: readonly string[], progress: (line: string) => void): Promise<void> {
  // Merged /usr, as Debian 12 installs it: /bin, /sbin, /lib* become links into /usr.
  for (const d of ["bin", "sbin", "lib", "lib64"]) {
    const top = path.join(root, d);
    const st = fs.lstatSync(top, { throwIfNoEntry: false });
    if (!st || st.isSymbolicLink()) continue;
    mergeInto(top, path.join(root, "usr", d));
    fs.rmSync(top, { recursive: true, force: true });
    fs.symlinkSync(`usr/${d}`, top);
  }
  for (const d of ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt", "var/lib/apt/lists"]) {
    fs.rmSync(path.join(root, d), { recursive: true, force: true });
  }
  for (const d of MOUNT_POINTS) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.chmodSync(path.join(root, "tmp"), 0o1777);
  const etc = path.join(root, "etc");
  fs.writeFileSync(path.join(etc, "passwd"), "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:user:/home/user:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
  fs.writeFileSync(path.join(etc, "group"), "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n");
  fs.writeFileSync(path.join(etc, "hosts"), "127.0.0.1 localhost sandbox\n::1 localhost\n");
  fs.writeFileSync(path.join(etc, "hostname"), "sandbox\n");
  // Links that maintainer scripts (never run here) would have made.
  const links: [string, string][] = [["usr/bin/awk", "mawk"], ["usr/bin/python", "python3"]];
  for (const [at, to] of links) {
    const p = path.join(root, at);
    if (!fs.existsSync(p) && fs.existsSync(path.join(path.dirname(p), to))) fs.symlinkSync(to, p);
  }
  const agentDir = path.join(root, "opt", "agentbox");
  fs.mkdirSync(agentDir, { recursive: true });
  fs.copyFileSync(path.join(GUEST_DIR, "agent.py"), path.join(root, AGENT_GUEST_PATH));
  fs.chmodSync(path.join(root, AGENT_GUEST_PATH), 0o755);
  fs.copyFileSync(path.join(GUEST_DIR, "display.py"), path.join(agentDir, "display.py")); // loaded by agent.py
  if (await has("gcc")) {
    progress("compiling the statx shim (gVisor 2022 refuses statx's AT_NO_AUTOMOUNT)");
    const so = path.join(agentDir, "statx-shim.so");
    await exec("gcc", ["-O2", "-shared", "-fPIC", "-o", so, path.join(GUEST_DIR, "statx-shim.c")]);
    fs.writeFileSync(path.join(etc, "ld.so.preload"), `/opt/agentbox/statx-shim.so\n`);
  } else {
    progress("warning: no gcc; without the statx shim `ls -l` and `stat` fail under older gVisor");
  }
  applyAlternatives(root, alternatives);
  writeCaBundle(root);
  // pip in a sandbox installs for the guest user (~/.local; the system's site-packages are read-only):
  // PEP 668's refusal to touch a distribution's Python protects a machine this sandbox is not.
  if (fs.existsSync(path.join(root, "usr/lib/python3/dist-packages/pip"))) {
    fs.writeFileSync(path.join(etc, "pip.conf"), "[global]\nbreak-system-packages = true\ndisable-pip-version-check = true\nno-warn-script-location = true\n");
  }
  fs.writeFileSync(path.join(root, WARM_PATH.slice(1)), JSON.stringify(warm) + "\n");
  if (process.getuid?.() === 0 && (await has("ldconfig"))) await exec("ldconfig", ["-r", root]);
  await precompile(root, progress);
}

/**
 * The CA bundle ca-certificates' postinst (update-ca-certificates, never run here) would make:
 * every certificate it ships, in one file where OpenSSL, curl, Python and pip look for it.
 */
function writeCaBundle(root: string): void {
  const from = path.join(root, "usr/share/ca-certificates");
  if (!fs.existsSync(from)) return;
  const certs = (fs.readdirSync(from, { recursive: true }) as string[]).filter((f) => f.endsWith(".crt")).sort();
  const bundle = certs.map((f) => fs.readFileSync(path.join(from, f), "utf8").trim() + "\n").join("");
  fs.mkdirSync(path.join(root, "etc/ssl/certs"), { recursive: true });
  fs.writeFileSync(path.join(root, "etc/ssl/certs/ca-certificates.crt"), bundle);
  // OpenSSL's default paths (Python's ssl module) without the openssl package's links.
  const ssl = path.join(root, "usr/lib/ssl");
  fs.mkdirSync(ssl, { recursive: true });
  if (!fs.existsSync(path.join(ssl, "cert.pem"))) fs.symlinkSync("/etc/ssl/certs/ca-certificates.crt", path.join(ssl, "cert.pem"));
  if (!fs.existsSync(path.join(ssl, "certs"))) fs.symlinkSync("/etc/ssl/certs", path.join(ssl, "certs"));
}

interface Alternative {
  link: string;
  name: string;
  target: string;
  priority: number;
}

/**
 * The `update-alternatives --install LINK NAME PATH PRIORITY` calls of a package's postinst
 * script. Maintainer scripts never run here, yet some links only they make are needed at run
 * time (numpy loads libblas.so.3 through one). Only calls with literal absolute paths count.
 */
async function alternativesOf(deb: string): Promise<Alternative[]> {
  let script: string;
  try {
    script = (await run("dpkg-deb", ["--info", deb, "postinst"], { maxBuffer: 4 * 1024 * 1024 })).stdout;
  } catch {
    return []; // no postinst
  }
  const out: Alternative[] = [];
  const joined = script.replace(/\\\n/g, " ");
  for (const m of joined.matchAll(/update-alternatives\s+(?:--quiet\s+)?--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)/g)) {
    const [, link, name, target, priority] = m as unknown as [string, string, string, string, string];
    if ([link, name, target].some((x) => x.includes("$") || x.includes("`")) || !link.startsWith("/") || !target.startsWith("/")) continue;
    out.push({ link, name, target, priority: Number(priority) });
  }
  return out;
}

/** Point each alternative's link at its highest-priority target present in the image, as dpkg would. */
function applyAlternatives(root: string, alternatives: readonly Alternative[]): void {
  const best = new Map<string, Alternative>();
  for (const a of alternatives) {
    if (!fs.existsSync(path.join(root, a.target))) continue;
    const cur = best.get(a.name);
    if (!cur || a.priority > cur.priority) best.set(a.name, a);
  }
  for (const a of best.values()) {
    const at = path.join(root, a.link);
    if (!path.resolve(at).startsWith(root + path.sep) || fs.lstatSync(at, { throwIfNoEntry: false })) continue;
    fs.mkdirSync(path.dirname(at), { recursive: true });
    fs.symlinkSync(a.target, at);
  }
}

/** Move the tree `from` into `to`, directory by directory; on a clash the file under /usr wins. */
function mergeInto(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(from)) {
    const src = path.join(from, e);
    const dest = path.join(to, e);
    const d = fs.lstatSync(dest, { throwIfNoEntry: false });
    if (!d) fs.renameSync(src, dest);
    else if (d.isDirectory() && fs.lstatSync(src).isDirectory()) mergeInto(src, dest);
  }
}

/** Byte-compile the image's Python inside a gVisor sandbox (never with the host's kernel open). */
async function precompile(root: string, progress: (line: string) => void): Promise<void> {
  if (!(await has("runsc")) || process.getuid?.() !== 0) {
    progress("warning: no runsc (or not root); Python modules are not precompiled (slower imports)");
    return;
  }
  progress("precompiling Python modules inside gVisor");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-precompile-"));
  try {
    const pyDirs = fs.readdirSync(path.join(root, "usr/lib")).filter((d) => /^python3(\.\d+)?$/.test(d)).map((d) => `/usr/lib/${d}`);
    writeOciBundle(dir, {
      rootfs: root,
      readonlyRoot: false,
      user: { uid: 0, gid: 0 },
      // Then matplotlib's font list, which it would otherwise build at every sandbox's first import
      // (a second of the warm-up); the agent copies it into the REPL's MPLCONFIGDIR.
      args: [
        "/bin/sh",
        "-c",
        `python3 -m compileall -q -x '/test/|/tests/' ${[...pyDirs, "/opt/agentbox"].join(" ")}; rc=$?
if python3 -c 'import matplotlib' 2>/dev/null; then MPLCONFIGDIR=${MATPLOTLIB_CACHE} python3 -c 'import matplotlib.font_manager' >/dev/null 2>&1; fi
exit $rc`,
      ],
      env: ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
      cwd: "/",
      hostname: "build",
      mounts: [{ destination: "/tmp", type: "tmpfs", source: "tmpfs" }],
    });
    const cid = `agentbox-build-${randomBytes(8).toString("hex")}`;
    const code = await new Promise<number | null>((resolve) => {
      const c = spawn("runsc", [`--root=${path.join(dir, "state")}`, "--network=none", "run", "--bundle", dir, cid], { stdio: ["ignore", "ignore", "pipe"] });
      c.stderr.resume();
      c.on("error", () => resolve(null));
      c.on("exit", (code) => resolve(code));
    });
    // compileall exits 1 when a file does not compile (Debian ships a few Python 2 test files).
    if (code !== 0 && code !== 1) progress(`warning: precompiling exited with ${code}; imports will be slower`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Bytes of the regular files under `dir`. */
export function duBytes(dir: string): number {
  let total = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) total += fs.statSync(p).size;
    }
  };
  walk(dir);
  return total;
}
