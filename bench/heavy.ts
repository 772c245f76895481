// Heavy tier (gVisor): start-up and round-trip costs next to the floor of the same work —
// `runsc run` of python3 -c 'print(1)' on the same image (what gVisor alone costs) and a plain
// chroot of it (no sandbox at all). Prints why and returns no rows when gVisor cannot run here.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildImage, Sandbox } from "../src/index.js";
import { gvisorUnavailableReason } from "../src/engines/heavy-gvisor/box.js";
import type { GvisorEngine } from "../src/engines/heavy-gvisor/engine.js";
import { writeOciBundle } from "../src/engines/heavy/oci.js";
import { rssOfMatchingMb, stats, timed, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

/** The options every heavy-tier sandbox of the bench is created with. */
export const HEAVY_OPTS = { tier: "heavy", limits: { memoryMb: 256 } } as const;
const opts = HEAVY_OPTS;

function runUntil(cmd: string, args: string[], expect: string): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    c.stdout.on("data", (d: Buffer) => (out += d.toString()));
    c.stderr.on("data", (d: Buffer) => (err += d.toString()));
    c.on("close", (code) => (out.includes(expect) ? resolve(performance.now() - t0) : reject(new Error(`${cmd} exited ${code}: ${out} ${err.slice(-500)}`))));
  });
}

/** `argv` run in a plain chroot of `rootfs` as uid 1000 (no sandbox at all): the floor; resolves once it exits having printed `expect`, ms. */
export function chrootOnce(rootfs: string, argv: string[], expect: string): Promise<number> {
  return runUntil("chroot", ["--userspec=1000:1000", rootfs, ...argv], expect);
}

/** `runsc run` of python3 -c 'print(1)' on the image: gVisor's own floor. */
async function bareRunsc(rootfs: string): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-bench-"));
  try {
    writeOciBundle(dir, {
      rootfs,
      readonlyRoot: true,
      user: { uid: 1000, gid: 1000 },
      args: ["/usr/bin/python3", "-c", "print(1)"],
      env: ["PATH=/usr/bin:/bin"],
      cwd: "/",
      mounts: [{ destination: "/tmp", type: "tmpfs", source: "tmpfs" }],
    });
    return await runUntil("runsc", [`--root=${path.join(dir, "state")}`, "--network=none", "run", "--bundle", dir, randomBytes(16).toString("hex")], "1");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function cgroupMemoryMb(sb: Sandbox): number {
  const dirs = (sb as unknown as { engine: GvisorEngine }).engine.resources.cgroupDirs;
  for (const d of dirs) {
    for (const f of ["memory.usage_in_bytes", "memory.current"]) {
      try {
        return Number(fs.readFileSync(path.join(d, f), "utf8")) / 2 ** 20;
      } catch {
        // not this controller
      }
    }
  }
  return NaN;
}

async function run({ quick, progress }: SectionContext): Promise<SectionResult> {
  const why = gvisorUnavailableReason();
  if (why) {
    progress(`heavy: skipped: ${why}`);
    return { rows: [], notes: [`skipped: ${why}`], summary: { skipped: why } };
  }
  const N = { base: quick ? 3 : 8, cold: quick ? 3 : 8, pooled: quick ? 5 : 15, rt: quick ? 100 : 500, restore: quick ? 3 : 8 };
  const rows: Row[] = [];
  progress("heavy: building/finding the image");
  const image = await buildImage({ onProgress: (l) => progress(`heavy: image: ${l}`) });

  progress(`heavy: baselines x${N.base}`);
  const chroot: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < N.base; i++) {
    // The floor: the image's python3 on the host kernel, no sandbox (a fixed print, not user code).
    chroot.push(await chrootOnce(image.rootfs, ["/usr/bin/python3", "-c", "print(1)"], "1"));
    bare.push(await bareRunsc(image.rootfs));
  }
  rows.push(stats("heavy baseline: chroot python3 -c 'print(1)' (no sandbox)", "ms", chroot));
  rows.push(stats("heavy baseline: runsc run python3 -c 'print(1)'", "ms", bare));

  await Sandbox.configurePool({ size: 0 });
  progress(`heavy: cold create x${N.cold}`);
  const cold: number[] = [];
  for (let i = 0; i < N.cold; i++) {
    const t0 = performance.now();
    const sb = await Sandbox.create({ ...opts, pool: false });
    await sb.runCode("print(1)");
    cold.push(performance.now() - t0);
    await sb.kill();
  }
  rows.push(stats("heavy cold (pool 0): create → first print(1) result", "ms", cold));

  progress(`heavy: pooled create x${N.pooled}`);
  await Sandbox.configurePool({ size: 2 });
  await (await Sandbox.create(opts)).kill(); // makes the heavy pool
  const pooled: number[] = [];
  for (let i = 0; i < N.pooled; i++) {
    await Sandbox.configurePool({ size: 2, wait: true });
    await new Promise((r) => setTimeout(r, 300)); // let the refill's start-up settle
    const t0 = performance.now();
    const sb = await Sandbox.create(opts);
    await sb.runCode("print(1)");
    pooled.push(performance.now() - t0);
    await sb.kill();
  }
  rows.push(stats("heavy pooled: create → first print(1) result", "ms", pooled));
  await Sandbox.shutdownPool();
  await Sandbox.configurePool({ size: 0 });

  const sb = await Sandbox.create({ ...opts, pool: false });
  for (let i = 0; i < 50; i++) await sb.runCode("1");
  const codeRt: number[] = [];
  for (let i = 0; i < N.rt; i++) codeRt.push(await timed(() => sb.runCode("1")));
  rows.push(stats("heavy runCode(\"1\") round trip", "ms", codeRt));
  const trueRt: number[] = [];
  for (let i = 0; i < Math.ceil(N.rt / 5); i++) trueRt.push(await timed(() => sb.commands.run("true")));
  rows.push(stats("heavy commands.run(\"true\") round trip", "ms", trueRt));

  progress(`heavy: restore x${N.restore}`);
  await sb.runCode("x = 1");
  const snap = await sb.snapshot();
  const restore: number[] = [];
  for (let i = 0; i < N.restore; i++) {
    const t0 = performance.now();
    const copy = await Sandbox.restore(snap);
    await copy.runCode("x");
    restore.push(performance.now() - t0);
    await copy.kill();
  }
  rows.push(stats("heavy Sandbox.restore(snapshot) → first runCode result", "ms", restore));
  await snap.remove();

  await new Promise((r) => setTimeout(r, 1000));
  const idleRss = rssOfMatchingMb((sb as unknown as { engine: GvisorEngine }).engine.resources.containerId);
  const idleCgroup = cgroupMemoryMb(sb);
  await sb.kill();

  progress("heavy: 10 concurrent creates");
  const conc: number[] = [];
  for (let rep = 0; rep < (quick ? 1 : 3); rep++) {
    const t0 = performance.now();
    const all = await Promise.all(Array.from({ length: 10 }, async () => {
      const s = await Sandbox.create({ ...opts, pool: false });
      await s.runCode("1");
      return s;
    }));
    conc.push(performance.now() - t0);
    await Promise.all(all.map((s) => s.kill()));
  }
  rows.push(stats("heavy 10 concurrent creates → all answered (wall time)", "ms", conc));

  const med = (name: string) => rows.find((r) => r.name.startsWith(name))!.median;
  const summary = {
    image: image.id,
    idleRssMb: Math.round(idleRss),
    idleCgroupMemoryMb: Math.round(idleCgroup),
    coldVsBareRunsc: +(med("heavy cold") / med("heavy baseline: runsc")).toFixed(2),
    targets: {
      pooledCreateP50LE20ms: med("heavy pooled") <= 20,
      runCodeRoundTripP50LE2ms: med("heavy runCode") <= 2,
      coldLE1_5xBareRunsc: med("heavy cold") / med("heavy baseline: runsc") <= 1.5,
    },
  };
  const notes = [
    `idle sandbox: ${summary.idleRssMb} MB RSS of its runsc processes, ${summary.idleCgroupMemoryMb} MB charged to its memory cgroup`,
    `cold create is ${summary.coldVsBareRunsc}x a bare runsc run`,
    `targets: ${JSON.stringify(summary.targets)}`,
  ];
  return { rows, notes, summary };
}

export const heavy: Section = { name: "heavy", run };
