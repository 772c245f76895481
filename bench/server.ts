// HTTP server under load: `agentbox serve` in its own process on loopback, driven by many
// concurrent clients (each creates a sandbox, runs snippets, deletes it). Reports throughput,
// latency percentiles and errors, and checks that no worker process outlives the server.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { stats, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

const BIN = fileURLToPath(new URL("../bin/agentbox.js", import.meta.url));

function childPids(parent: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === parent) out.push(Number(d));
    } catch {
      // gone while we looked
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
}

const SNIPPETS = [
  (i: number) => `x = ${i}`,
  (i: number) => `x + ${i}`,
  () => "sum(range(1000))",
  (i: number) => `print('line', ${i})`,
  () => "import json; json.dumps({'a': [1, 2, 3]})",
];

async function run({ quick, progress }: SectionContext): Promise<SectionResult> {
  const clients = quick ? 10 : 50;
  const runsPerClient = quick ? 5 : 20;
  const maxSandboxes = 16; // the server's default global cap; creates past it wait in its queue
  const keyCount = 5;
  const keys = Array.from({ length: keyCount }, (_, i) => ({ name: `bench${i}`, key: `bench-key-${i}-0123456789abcdef`, maxSandboxes: Math.ceil(clients / keyCount) }));

  progress(`server: starting agentbox serve (cap ${maxSandboxes} live sandboxes, pool 2)`);
  const proc = spawn(process.execPath, [BIN, "serve", "--port", "0", "--max-sandboxes", String(maxSandboxes), "--pool", process.env.BENCH_POOL ?? "2", "--queue-timeout", "120s", ...(process.env.BENCH_MAX_STARTS ? ["--max-starts", process.env.BENCH_MAX_STARTS] : [])], {
    env: { ...process.env, AGENTBOX_API_KEYS: JSON.stringify({ keys }) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let serverErr = "";
  proc.stderr.on("data", (d: Buffer) => (serverErr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once("exit", (c) => reject(new Error(`serve exited (${c}): ${serverErr}`)));
  });

  // Every worker the server ever had, sampled while the load runs.
  const seen = new Set<number>();
  let peakWorkers = 0;
  const sampler = setInterval(() => {
    const now = childPids(proc.pid!);
    now.forEach((p) => seen.add(p));
    peakWorkers = Math.max(peakWorkers, now.length);
  }, 50);

  const lat = { create: [] as number[], run: [] as number[], del: [] as number[] };
  const errors: string[] = [];
  let requests = 0;
  const call = async (key: string, method: string, path: string, body?: unknown): Promise<unknown> => {
    requests++;
    const res = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
    return text ? (JSON.parse(text) as unknown) : undefined;
  };
  const timed = async <T>(into: number[], fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const r = await fn();
    into.push(performance.now() - t0);
    return r;
  };

  // Warm-up (not timed): builds the interpreter snapshot if this build has none yet, fills the pool.
  progress("server: warm-up");
  const warm = (await call(keys[0]!.key, "POST", "/sandboxes", {})) as { id: string };
  await call(keys[0]!.key, "POST", `/sandboxes/${warm.id}/run`, { code: "1" });
  await call(keys[0]!.key, "DELETE", `/sandboxes/${warm.id}`);
  await new Promise((r) => setTimeout(r, 2000));
  requests = 0;

  progress(`server: ${clients} clients × (create, ${runsPerClient} runs, delete)`);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const key = keys[c % keyCount]!.key;
      let id: string | undefined;
      try {
        id = ((await timed(lat.create, () => call(key, "POST", "/sandboxes", { limits: { memoryMb: 128 } }))) as { id: string }).id;
        for (let i = 0; i < runsPerClient; i++) {
          const r = (await timed(lat.run, () => call(key, "POST", `/sandboxes/${id}/run`, { code: SNIPPETS[i % SNIPPETS.length]!(i) }))) as { exitCode: number; error?: unknown };
          if (r.exitCode !== 0) errors.push(`client ${c} run ${i}: guest error ${JSON.stringify(r.error)}`);
        }
      } catch (e) {
        errors.push(`client ${c}: ${(e as Error).message}`);
      } finally {
        if (id) await timed(lat.del, () => call(key, "DELETE", `/sandboxes/${id}`)).catch((e: Error) => errors.push(`client ${c} delete: ${e.message}`));
      }
    }),
  );
  const wallS = (performance.now() - t0) / 1000;

  // After every delete only the pool's idle workers may remain; then SIGTERM must end them too.
  await new Promise((r) => setTimeout(r, 300));
  clearInterval(sampler);
  childPids(proc.pid!).forEach((p) => seen.add(p));
  const afterDeletes = childPids(proc.pid!).length;
  const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${keys[0]!.key}` } })).text();
  proc.kill("SIGTERM");
  const [code] = (await once(proc, "exit")) as [number | null];
  const deadline = Date.now() + 5000;
  while ([...seen].some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const leaked = [...seen].filter(alive).length;

  const rows: Row[] = [
    stats(`server: POST /sandboxes (${clients} concurrent, cap ${maxSandboxes}, incl. queue wait)`, "ms", lat.create),
    stats(`server: POST /sandboxes/{id}/run under load (${clients} clients)`, "ms", lat.run),
    stats("server: DELETE /sandboxes/{id}", "ms", lat.del),
  ];
  const all = [...lat.create, ...lat.run, ...lat.del];
  const startSum = Number(/agentbox_sandbox_start_seconds_sum (\S+)/.exec(metrics)?.[1]);
  const startCount = Number(/agentbox_sandbox_start_seconds_count (\S+)/.exec(metrics)?.[1]);
  const summary = {
    clients,
    runsPerClient,
    maxSandboxes,
    wallSeconds: +wallS.toFixed(2),
    requestsPerSecond: Math.round(requests / wallS),
    runsPerSecond: Math.round(lat.run.length / wallS),
    latencyMs: {
      all: { p50: +pct(all, 0.5).toFixed(1), p95: +pct(all, 0.95).toFixed(1), p99: +pct(all, 0.99).toFixed(1) },
      create: { p50: +pct(lat.create, 0.5).toFixed(1), p95: +pct(lat.create, 0.95).toFixed(1), p99: +pct(lat.create, 0.99).toFixed(1) },
      run: { p50: +pct(lat.run, 0.5).toFixed(1), p95: +pct(lat.run, 0.95).toFixed(1), p99: +pct(lat.run, 0.99).toFixed(1) },
    },
    meanServerStartMs: +((startSum / startCount) * 1000).toFixed(1),
    errors: errors.length,
    peakWorkers,
    workersAfterDeletes: afterDeletes,
    serverExitCode: code,
    leakedWorkers: leaked,
    checks: { zeroErrors: errors.length === 0, zeroLeaked: leaked === 0, cleanExit: code === 0, onlyPoolLeftAfterDeletes: afterDeletes <= 2 },
  };
  const notes = [
    `${requests} requests in ${summary.wallSeconds} s: ${summary.requestsPerSecond} req/s, ${summary.runsPerSecond} runs/s`,
    `latency p50/p95/p99 ms — all: ${Object.values(summary.latencyMs.all).join("/")}, create: ${Object.values(summary.latencyMs.create).join("/")}, run: ${Object.values(summary.latencyMs.run).join("/")}`,
    `mean sandbox start inside the server (after the slot, incl. waiting for a start turn): ${summary.meanServerStartMs} ms; peak worker processes: ${peakWorkers}`,
    `errors: ${errors.length}${errors.length ? ` (first: ${errors[0]})` : ""}; workers after all deletes: ${afterDeletes} (pool); leaked after SIGTERM: ${leaked}; server exit code: ${code}`,
    `checks: ${JSON.stringify(summary.checks)}`,
  ];
  if (errors.length || leaked || code !== 0) process.exitCode = 1;
  return { rows, notes, summary };
}

export const server: Section = { name: "server", run };
