// Density and bursts: every target of that issue measured in one run, each printed as
// "measured vs target (met / not met)" — a one-shot CLI process beside a one-shot Pyodide
// process, pooled creates at a steady pace, CPU per cold sandbox, marginal memory per idle
// sandbox (PSS), 20 concurrent creates in one process, a 50-create burst and a sustained
// 5 creates/s through the server, and the heavy tier's concurrent creates, command round trip
// and idle memory (skipped, with the reason, when gVisor cannot run here).
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildImage, Sandbox } from "../src/index.js";
import { cacheDir } from "../src/engines/cache.js";
import { gvisorUnavailableReason } from "../src/engines/heavy-gvisor/box.js";
import type { GvisorEngine } from "../src/engines/heavy-gvisor/engine.js";
import { createServer, KeyRing } from "../src/server/index.js";
import { chrootOnce, HEAVY_OPTS } from "./heavy.js";
import { pidsWithCmdline, smapsMb, stats, timed, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";
import { BASELINE_SCRIPT } from "./python.js";

const BIN = new URL("../bin/agentbox.js", import.meta.url).pathname;
const TIME = "/usr/bin/time";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of process `pid` (all its threads, living and ended), ms; at CLK_TCK resolution. */
function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK; // fields 14 and 15 of stat(5)
}

/** CPU of each living thread of `pid` by thread name (utime+stime), ms: where a worker's CPU went. */
function cpuByThreadMs(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = fs.readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      const key = Number(tid) === pid ? "main" : name;
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out[key] = (out[key] ?? 0) + ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** `n` round trips (a line written, its echo read) to bench/pipe-echo.mjs, one every `intervalMs`, ms. */
async function pipeRoundTrips(n: number, intervalMs: number): Promise<number[]> {
  const child = spawn(process.execPath, [new URL("./pipe-echo.mjs", import.meta.url).pathname], { stdio: ["pipe", "pipe", "inherit"] });
  child.stdout.setEncoding("utf8");
  const lines: ((line: string) => void)[] = [];
  let buf = "";
  child.stdout.on("data", (c: string) => {
    buf += c;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.shift()?.(line);
    }
  });
  const once = (msg: string) =>
    new Promise<number>((resolve, reject) => {
      const t0 = performance.now();
      lines.push((line) => (line === msg ? resolve(performance.now() - t0) : reject(new Error(`pipe echo answered ${JSON.stringify(line)}`))));
      child.stdin.write(`${msg}\n`);
    });
  try {
    await once("warm-up");
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      await sleep(intervalMs);
      xs.push(await once(`ping ${i}`));
    }
    return xs;
  } finally {
    child.kill();
  }
}

/** One process, spawn → exit (code 0 required), ms; with its peak RSS (GNU time's %M: the largest of it and its waited-for children), MB, when /usr/bin/time exists. */
async function oneShot(argv: string[], env: NodeJS.ProcessEnv, expect: string): Promise<{ ms: number; peakMb: number | undefined }> {
  const useTime = fs.existsSync(TIME);
  const out = useTime ? path.join(os.tmpdir(), `agentbox-bench-time-${process.pid}-${Math.random().toString(36).slice(2)}`) : "";
  const [cmd, ...args] = useTime ? [TIME, "-f", "%M", "-o", out, ...argv] : argv;
  const t0 = performance.now();
  const { code, stdout } = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const c = spawn(cmd!, args, { env, stdio: ["ignore", "pipe", "inherit"] });
    let s = "";
    c.stdout.on("data", (d: Buffer) => (s += d.toString()));
    c.on("close", (code) => resolve({ code, stdout: s }));
  });
  const ms = performance.now() - t0;
  if (code !== 0 || !stdout.includes(expect)) throw new Error(`bench density: ${argv.join(" ")} exited ${code}: ${JSON.stringify(stdout.slice(0, 200))}`);
  let peakMb: number | undefined;
  if (useTime) {
    peakMb = Number(fs.readFileSync(out, "utf8").trim().split("\n").pop()) / 1024;
    fs.rmSync(out, { force: true });
  }
  return { ms, peakMb };
}

interface Target {
  measured: number;
  target: number;
  unit: string;
  /** "le": measured must be at most target; "ge": at least. */
  op: "le" | "ge";
  met: boolean;
}

async function run({ quick, progress }: SectionContext): Promise<SectionResult> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const targets: Record<string, Target | { skipped: string }> = {};
  const summary: Record<string, unknown> = { targets };
  const check = (key: string, label: string, measured: number, op: "le" | "ge", target: number, unit: string) => {
    const met = op === "le" ? measured <= target : measured >= target;
    targets[key] = { measured: +measured.toFixed(2), target, unit, op, met };
    const f = (x: number) => `${x < 10 ? x.toFixed(2) : x.toFixed(0)}${unit === "x" ? "×" : ` ${unit}`}`;
    notes.push(`${label}: ${f(measured)} vs target ${op === "le" ? "≤" : "≥"} ${f(target)} (${met ? "met" : "NOT MET"})`);
  };
  const skip = (key: string, label: string, why: string) => {
    targets[key] = { skipped: why };
    notes.push(`${label}: skipped: ${why}`);
  };
  const med = (r: Row) => r.median;
  const push = (r: Row) => (rows.push(r), r);

  progress("density: warming the snapshot caches (python, javascript)");
  await Sandbox.configurePool({ size: 0 });
  await (await Sandbox.create({ pool: false })).kill();
  await (await Sandbox.create({ language: "javascript", pool: false })).kill();

  // 1. One-shot CLI process vs one-shot Pyodide process, each spawn → exit.
  {
    const n = quick ? 3 : 8;
    const env = { ...process.env, AGENTBOX_CACHE_DIR: cacheDir() };
    const cliArgv = [process.execPath, BIN, "run", "-c", "print(1)"];
    await oneShot(cliArgv, env, "1"); // the CLI's own snapshot, warm
    progress(`density: one-shot CLI vs one-shot Pyodide process x${n}`);
    const cli: number[] = [];
    const base: number[] = [];
    const cliPeak: number[] = [];
    const basePeak: number[] = [];
    for (let i = 0; i < n; i++) {
      const c = await oneShot(cliArgv, env, "1");
      const b = await oneShot([process.execPath, BASELINE_SCRIPT], env, "1");
      cli.push(c.ms);
      base.push(b.ms);
      if (c.peakMb !== undefined) cliPeak.push(c.peakMb);
      if (b.peakMb !== undefined) basePeak.push(b.peakMb);
    }
    const rc = push(stats("density: one-shot `agentbox run -c 'print(1)'` process, spawn → exit", "ms", cli));
    const rb = push(stats("density: one-shot Pyodide process (loadPyodide + print(1)), spawn → exit", "ms", base));
    check("oneShotCliSpeedup", "one-shot CLI vs one-shot Pyodide process (median ratio)", med(rb) / med(rc), "ge", 5, "x");
    if (cliPeak.length) {
      push(stats("density: one-shot CLI peak RSS (largest process: host or worker)", "MB", cliPeak));
      push(stats("density: one-shot Pyodide process peak RSS", "MB", basePeak));
      summary.oneShotPeakRssMb = { cli: Math.round(stats("", "", cliPeak).median), pyodide: Math.round(stats("", "", basePeak).median) };
    } else notes.push(`one-shot peak RSS: skipped: ${TIME} is not installed`);
  }

  // 2. Pooled create → first result at a steady pace (pool at its default size, 2).
  {
    const n = quick ? 6 : 20;
    for (const [language, code] of [["python", "print(1)"], ["javascript", "console.log(1)"]] as const) {
      for (const intervalMs of [1000, 400]) {
        progress(`density: ${language} pooled create every ${intervalMs} ms x${n}`);
        await Sandbox.configurePool({ size: 2, wait: true });
        const xs: number[] = [];
        const t0 = performance.now();
        for (let i = 0; i < n; i++) {
          await sleep(Math.max(0, t0 + i * intervalMs - performance.now()));
          const s = performance.now();
          const sb = await Sandbox.create({ language });
          await sb.runCode(code);
          xs.push(performance.now() - s);
          await sb.kill();
        }
        const r = push(stats(`density: ${language} pooled create → first result, one per ${intervalMs / 1000} s`, "ms", xs));
        check(`${language}Pooled${intervalMs}msP50`, `${language} pooled create → first result p50, one create per ${intervalMs / 1000} s`, med(r), "le", 2, "ms");
      }
    }
    // The machine's floor under those rows: one bare round trip to a waiting Node process at the
    // same pace (a pooled create → first result is at least one, plus the configure's write).
    progress(`density: baseline pipe round trip every 1000 ms x${n}`);
    const rt = await pipeRoundTrips(n, 1000);
    push(stats("density: baseline: bare pipe round trip to an idle Node process, one per 1 s", "ms", rt));
  }

  // 3. CPU per cold sandbox (pool off): the worker's utime+stime and this process's, create → first result.
  await Sandbox.configurePool({ size: 0 });
  {
    const n = quick ? 3 : 10;
    for (const [language, code, target] of [["python", "print(1)", 150], ["javascript", "console.log(1)", 50]] as const) {
      progress(`density: ${language} CPU per cold sandbox x${n}`);
      const worker: number[] = [];
      const workerAtCreate: number[] = [];
      const host: number[] = [];
      const wall: number[] = [];
      for (let i = 0; i < n; i++) {
        const h0 = process.cpuUsage();
        const t0 = performance.now();
        const sb = await Sandbox.create({ language, pool: false });
        workerAtCreate.push(cpuMs(sb.pid!));
        await sb.runCode(code);
        wall.push(performance.now() - t0);
        worker.push(cpuMs(sb.pid!));
        const h = process.cpuUsage(h0);
        host.push((h.user + h.system) / 1000);
        if (i === n - 1) {
          // The last one: which threads the CPU went to, and what it keeps using once idle.
          const threads = Object.entries(cpuByThreadMs(sb.pid!)).filter(([, ms]) => ms > 0).map(([t, ms]) => `${t} ${ms.toFixed(0)}`).join(", ");
          await sleep(2000);
          const later = cpuMs(sb.pid!) - worker.at(-1)!;
          summary[`${language}ColdCpuSplit`] = { threadsMs: cpuByThreadMs(sb.pid!), idleAfter2sMs: later };
          notes.push(`${language} cold worker CPU by thread at first result (ms): ${threads || "none"}; in the 2 s idle after it: +${later.toFixed(0)} ms`);
        }
        await sb.kill();
      }
      const rw = push(stats(`density: ${language} cold: worker CPU (utime+stime), spawn → first result`, "ms", worker));
      push(stats(`density: ${language} cold:   of which by the time create resolved`, "ms", workerAtCreate));
      push(stats(`density: ${language} cold: host process CPU, create → first result`, "ms", host));
      push(stats(`density: ${language} cold: wall time, create → first result`, "ms", wall));
      check(`${language}ColdWorkerCpu`, `${language} CPU per cold sandbox (worker process)`, med(rw), "le", target, "ms");
      notes.push(`${language} CPU per cold sandbox incl. the host side: ${(med(rw) + stats("", "", host).median).toFixed(0)} ms (worker ${med(rw).toFixed(0)} + host ${stats("", "", host).median.toFixed(0)}); /proc/<pid>/stat resolution ${(1000 / CLK_TCK).toFixed(0)} ms`);
    }
    notes.push("the worker reports no start-up phases (its ready message carries versions only): the split above is by the CPU used when create resolved and by thread, nothing finer");
  }

  // 4. Marginal memory per idle sandbox: PSS of N idle workers minus that of one alone, over N − 1.
  {
    const n = quick ? 6 : 11;
    for (const [language, target] of [["python", 80], ["javascript", 25]] as const) {
      progress(`density: ${language} memory of ${n} idle sandboxes`);
      const boxes: Sandbox[] = [];
      const idle = async () => {
        const sb = await Sandbox.create({ language, pool: false });
        await sb.runCode("1");
        boxes.push(sb);
      };
      try {
        await idle();
        await sleep(1000);
        const one = smapsMb(boxes[0]!.pid!)!.pss;
        for (let i = 1; i < n; i++) await idle();
        await sleep(1000);
        const mem = boxes.map((b) => smapsMb(b.pid!)!);
        const all = mem.reduce((a, m) => a + m.pss, 0);
        const marginal = (all - one) / (n - 1);
        push(stats(`density: ${language} idle worker RSS (${n} live)`, "MB", mem.map((m) => m.rss)));
        push(stats(`density: ${language} idle worker PSS (${n} live)`, "MB", mem.map((m) => m.pss)));
        summary[`${language}IdleMemoryMb`] = { pssOneAlone: +one.toFixed(1), pssAllN: +all.toFixed(1), n, marginalPss: +marginal.toFixed(1) };
        check(`${language}MarginalPss`, `${language} marginal memory per idle sandbox (PSS of ${n} workers − PSS of one alone (${one.toFixed(0)} MB), ÷ ${n - 1})`, marginal, "le", target, "MB");
      } finally {
        await Promise.all(boxes.map((b) => b.kill()));
      }
    }
  }

  // 5. 20 concurrent Python creates in one process, pool at its default.
  {
    const reps = quick ? 1 : 3;
    progress(`density: 20 concurrent python creates x${reps}`);
    const wall: number[] = [];
    for (let r = 0; r < reps; r++) {
      await Sandbox.configurePool({ size: 2, wait: true });
      const boxes: Sandbox[] = [];
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          const sb = await Sandbox.create();
          boxes.push(sb);
          await sb.runCode("print(1)");
        }),
      );
      wall.push(performance.now() - t0);
      await Promise.all(boxes.map((b) => b.kill()));
    }
    const r = push(stats("density: 20 concurrent python creates → all first results (wall, pool 2)", "ms", wall));
    check("python20ConcurrentWall", "20 concurrent python creates → all first results (wall)", med(r) / 1000, "le", 2, "s");
  }

  // 6. The server, in process: a burst of 50 creates, then a sustained 5 creates/s.
  {
    const KEY = "bench-density-key-0123456789";
    const keys = KeyRing.fromEntries([{ name: "bench", key: KEY, maxSandboxes: 100 }]);
    await Sandbox.configurePool({ size: 0 });
    const server = await createServer({ keys, log: () => undefined }); // defaults: pool 2, 16 live sandboxes
    const call = async (method: string, p: string, body?: unknown) => {
      const res = await server.app.request(p, { method, headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
      const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
      if (res.status >= 300) throw new Error(`bench density: ${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
      return json!;
    };
    const errors: string[] = [];
    try {
      progress("density: server warm-up");
      const w = (await call("POST", "/sandboxes", {})).id as string;
      await call("POST", `/sandboxes/${w}/run`, { code: "1" });
      await call("DELETE", `/sandboxes/${w}`);
      await sleep(2000);

      progress("density: server burst of 50 creates");
      const burst: number[] = [];
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          let id: string | undefined;
          try {
            const s = performance.now();
            id = (await call("POST", "/sandboxes", {})).id as string;
            await call("POST", `/sandboxes/${id}/run`, { code: `print(${i})` });
            burst.push(performance.now() - s);
          } catch (e) {
            errors.push(`burst ${i}: ${(e as Error).message}`);
          } finally {
            if (id) await call("DELETE", `/sandboxes/${id}`).catch((e: Error) => errors.push(`burst ${i} delete: ${e.message}`));
          }
        }),
      );
      const burstWall = performance.now() - t0;
      const rb = push(stats("density: server burst, 50 concurrent: create → first result (16 live cap, pool 2)", "ms", burst));
      summary.serverBurst = { wallMs: Math.round(burstWall), answered: burst.length };
      notes.push(`server burst: ${burst.length} of 50 creates answered in ${(burstWall / 1000).toFixed(1)} s wall (the rows count answered creates only)`);
      check("serverBurstP50", "server burst of 50: create → first result p50", med(rb) / 1000, "le", 2, "s");
      check("serverBurstP95", "server burst of 50: create → first result p95", rb.p95 / 1000, "le", 4, "s");

      await sleep(2000); // the pool refills
      const seconds = quick ? 15 : 60;
      progress(`density: server sustained 5 creates/s for ${seconds} s`);
      const creates: number[] = [];
      const cycles: number[] = [];
      const jobs: Promise<void>[] = [];
      const s0 = performance.now();
      for (let i = 0; i < seconds * 5; i++) {
        await sleep(Math.max(0, s0 + i * 200 - performance.now()));
        jobs.push(
          (async () => {
            let id: string | undefined;
            try {
              const s = performance.now();
              id = (await call("POST", "/sandboxes", {})).id as string;
              creates.push(performance.now() - s);
              await call("POST", `/sandboxes/${id}/run`, { code: "x = 1" });
              cycles.push(performance.now() - s);
            } catch (e) {
              errors.push(`sustained ${i}: ${(e as Error).message}`);
            } finally {
              if (id) await call("DELETE", `/sandboxes/${id}`).catch((e: Error) => errors.push(`sustained ${i} delete: ${e.message}`));
            }
          })(),
        );
      }
      await Promise.all(jobs);
      const rs = push(stats(`density: server sustained 5 creates/s for ${seconds} s: POST /sandboxes`, "ms", creates));
      push(stats(`density: server sustained 5 creates/s for ${seconds} s: create + one run`, "ms", cycles));
      summary.serverSustained = { offered: seconds * 5, answered: cycles.length };
      notes.push(`server sustained: ${cycles.length} of ${seconds * 5} create + run cycles answered`);
      check("serverSustainedCreateP50", `server sustained 5 creates/s for ${seconds} s: create p50`, med(rs), "le", 10, "ms");
    } finally {
      await server.close();
    }
    summary.serverErrors = errors.length;
    notes.push(`server errors: ${errors.length}${errors.length ? ` (first: ${errors[0]})` : ""}`);
  }

  // 7. Heavy tier (gVisor).
  const why = gvisorUnavailableReason();
  if (why) {
    for (const [k, l] of [["heavy10ConcurrentWall", "heavy 10 concurrent creates"], ["heavyCommandRoundTripP50", "heavy commands.run(\"true\") round trip"], ["heavyIdleMemory", "heavy idle sandbox memory"]] as const) skip(k, l, why);
  } else {
    progress("density: heavy: building/finding the image");
    const image = await buildImage({ onProgress: (l) => progress(`density: heavy: image: ${l}`) });
    await Sandbox.configurePool({ size: 0 });
    await (await Sandbox.create({ ...HEAVY_OPTS, pool: false })).kill(); // warm
    const reps = quick ? 1 : 3;
    progress(`density: heavy: 10 concurrent creates x${reps}`);
    const conc: number[] = [];
    for (let r = 0; r < reps; r++) {
      const boxes: Sandbox[] = [];
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          const sb = await Sandbox.create({ ...HEAVY_OPTS, pool: false });
          boxes.push(sb);
          await sb.runCode("1");
        }),
      );
      conc.push(performance.now() - t0);
      await Promise.all(boxes.map((b) => b.kill()));
    }
    const rc = push(stats("density: heavy 10 concurrent creates → all first results (wall, pool off)", "ms", conc));
    check("heavy10ConcurrentWall", "heavy 10 concurrent creates (wall)", med(rc) / 1000, "le", 1, "s");

    const n = quick ? 30 : 150;
    progress(`density: heavy: commands.run("true") x${n} and chroot /bin/true x${Math.ceil(n / 3)}`);
    const sb = await Sandbox.create({ ...HEAVY_OPTS, pool: false });
    try {
      for (let i = 0; i < 5; i++) await sb.commands.run("true");
      const rt: number[] = [];
      for (let i = 0; i < n; i++) rt.push(await timed(() => sb.commands.run("true")));
      const chroot: number[] = [];
      for (let i = 0; i < Math.ceil(n / 3); i++) chroot.push(await chrootOnce(image.rootfs, ["/bin/true"], ""));
      const rr = push(stats('density: heavy commands.run("true") round trip', "ms", rt));
      push(stats("density: heavy baseline: chroot /bin/true (fresh process, no sandbox)", "ms", chroot));
      check("heavyCommandRoundTripP50", 'heavy commands.run("true") round trip p50', med(rr), "le", 15, "ms");

      await sleep(1000);
      const containerId = (sb as unknown as { engine: GvisorEngine }).engine.resources.containerId;
      const pids = pidsWithCmdline(containerId);
      const mem = pids.map(smapsMb).filter((m) => m !== undefined);
      const rss = mem.reduce((a, m) => a + m.rss, 0);
      const pss = mem.reduce((a, m) => a + m.pss, 0);
      summary.heavyIdleMemoryMb = { processes: mem.length, rss: +rss.toFixed(1), pss: +pss.toFixed(1) };
      notes.push(`heavy idle sandbox: ${rss.toFixed(0)} MB RSS, ${pss.toFixed(0)} MB PSS over its ${mem.length} runsc processes (no target)`);
    } finally {
      await sb.kill();
    }
  }

  const met = Object.values(targets).filter((t) => "met" in t && t.met).length;
  const measured = Object.values(targets).filter((t) => "met" in t).length;
  notes.push(`${met} of ${measured} measured targets met (machine: ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(1)})`);
  return { rows, notes, summary };
}

export const density: Section = { name: "density", run };
