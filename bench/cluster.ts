// Cluster mode (`agentbox serve --cluster etcd://…`) on loopback: a 3-member etcd cluster and 3
// agentbox nodes as separate processes (test/cluster-helpers.ts). Measures what forwarding costs
// (the same tiny run through the sandbox's own node and through another node, interleaved), how
// fast a burst of creates goes through 3 nodes beside one plain `agentbox serve` with the same
// flags, and how long a SIGKILLed node's sandboxes take to answer 410 through a survivor.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { etcdUnavailableReason, startEtcd, startNode, until, type EtcdCluster, type Node } from "../test/cluster-helpers.js";
import { childPids, spawnServer } from "../test/server-helpers.js";
import { stats, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

const KEY = "bench-cluster-key-0123456789";
const KEYS = JSON.stringify({ keys: [{ name: "bench", key: KEY, maxSandboxes: 100 }] });
const LEASE_S = 3;
/** Every agentbox process here (the 3 nodes and the single server) gets these. */
const POOL = 2;
const MAX_SANDBOXES = 32;
/** A create in a burst may wait its turn behind the others (cold starts on 2 shared cores): not a failure until this. */
const CREATE_TIMEOUT_MS = 120_000;
const COMMON_ARGS = ["--pool", String(POOL), "--max-sandboxes", String(MAX_SANDBOXES)];

interface Info {
  id: string;
  node?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Until the worker processes of `pids` stop changing for 1.5 s (their pools refilled, nothing
 * starting), at most `maxMs`: so one measurement does not pay for the last one's refills.
 */
async function quiet(pids: number[], maxMs = 20_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = "";
  let since = Date.now();
  while (Date.now() < deadline) {
    const now = pids.map((p) => childPids(p).sort().join(",")).join(";");
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= 1500) return;
    await sleep(100);
  }
}

async function req(base: string, method: string, p: string, body?: unknown, timeoutMs = 30_000): Promise<Response> {
  return fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(timeoutMs),
  });
}

async function json<T>(base: string, method: string, p: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
  const r = await req(base, method, p, body, timeoutMs);
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p} via ${base}: ${r.status} ${text.slice(0, 300)}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

async function timedMs<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [performance.now() - t0, v];
}

const tally = (xs: (string | undefined)[]) => {
  const m: Record<string, number> = {};
  for (const x of xs) m[x ?? "?"] = (m[x ?? "?"] ?? 0) + 1;
  return Object.entries(m)
    .sort()
    .map(([k, v]) => `${k}:${v}`)
    .join(" ");
};

async function runSection({ quick, progress }: SectionContext): Promise<SectionResult> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const summary: Record<string, unknown> = {};
  const skip = etcdUnavailableReason();
  if (skip) return { rows, notes: [`skipped: ${skip}`], summary: { skipped: skip } };

  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-bench-cluster-"));
  const singleStateDir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-bench-single-"));
  const env = { AGENTBOX_API_KEYS: KEYS };
  const nodeArgs = ["--lease-ttl", `${LEASE_S}s`, "--state-dir", stateDir, ...COMMON_ARGS];
  /** Every process started here, killed in `finally` whatever happened (a killed one is skipped). */
  const procs: { kill(signal?: NodeJS.Signals): Promise<void> }[] = [];
  let etcd: EtcdCluster | undefined;
  let nodes: Node[] = [];
  const start = async (id: string) => {
    const n = await startNode(etcd!.spec, id, nodeArgs, env);
    procs.push(n);
    return n;
  };
  /** Until every live node sees `ids` as the cluster's nodes (and has published its room). */
  const converged = async (ids: string[]) => {
    await until(
      async () => {
        const hs = await Promise.all(nodes.map((n) => fetch(`${n.url}/healthz`).then(async (r) => ((await r.json()) as { cluster: { nodes: string[] } }).cluster.nodes.join(","))));
        return hs.every((h) => h === ids.join(",")) ? true : undefined;
      },
      15_000,
      `the nodes to see ${ids.join(",")}`,
    );
    await sleep(1300); // every node's room published once more
  };

  try {
    progress("cluster: starting 3 etcd members and 3 nodes");
    etcd = await startEtcd(3);
    nodes = await Promise.all(["a", "b", "c"].map(start));
    await converged(["a", "b", "c"]);
    const pids = () => nodes.map((x) => x.proc.pid!);
    const by = (id: string) => nodes.find((n) => n.id === id)!;

    // 1. Routing overhead: one sandbox, the same tiny run through its node and through another.
    {
      const n = quick ? 60 : 200;
      const warm = 20;
      const sb = await json<Info>(nodes[0]!.url, "POST", "/sandboxes", { language: "python" });
      const owner = by(sb.node!);
      const other = nodes.find((x) => x !== owner)!;
      progress(`cluster: routing: ${n} runs through the owner (${owner.id}) and ${n} through ${other.id}, interleaved`);
      const runVia = async (base: string) => {
        const [ms, r] = await timedMs(() => json<{ value?: string; error?: unknown }>(base, "POST", `/sandboxes/${sb.id}/run`, { code: "1" }));
        if (r.value !== "1") throw new Error(`bench cluster: run answered ${JSON.stringify(r)}`);
        return ms;
      };
      // The floor of one more hop here: a bare Node reverse proxy (bench/bare-proxy.mjs) in front of the owner.
      const bare = spawn(process.execPath, [fileURLToPath(new URL("./bare-proxy.mjs", import.meta.url)), owner.url], { stdio: ["ignore", "pipe", "inherit"] });
      procs.push({ kill: async () => void bare.kill("SIGKILL") });
      const bareUrl = await new Promise<string>((resolve, reject) => {
        let out = "";
        bare.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          const m = /ready (http:\/\/\S+)/.exec(out);
          if (m) resolve(m[1]!);
        });
        bare.once("exit", (code) => reject(new Error(`bench cluster: bare proxy exited (${code})`)));
      });
      await quiet(pids());
      for (let i = 0; i < warm; i++) {
        await runVia(owner.url);
        await runVia(other.url);
        await runVia(bareUrl);
      }
      const direct: number[] = [];
      const routed: number[] = [];
      const proxied: number[] = [];
      const order = [
        [direct, owner.url],
        [routed, other.url],
        [proxied, bareUrl],
      ] as const;
      for (let i = 0; i < n; i++) {
        // Rotate which goes first, so none always follows another.
        for (let k = 0; k < 3; k++) {
          const [into, url] = order[(i + k) % 3]!;
          into.push(await runVia(url));
        }
      }
      bare.kill("SIGKILL");
      await json(other.url, "DELETE", `/sandboxes/${sb.id}`);
      const d = stats("cluster: POST /run {code:'1'} through the sandbox's own node", "ms", direct);
      const r = stats("cluster: POST /run {code:'1'} through another node (forwarded)", "ms", routed);
      const b = stats("  baseline: the same through a bare Node reverse proxy in front of the own node", "ms", proxied);
      rows.push(d, r, b);
      const bareAdded = b.median - d.median;
      const barePaired = stats("", "ms", proxied.map((x, i) => x - direct[i]!)).median;
      summary.bareProxyAddedMsP50 = +bareAdded.toFixed(3);
      summary.bareProxyAddedMsPairedP50 = +barePaired.toFixed(3);
      const added = r.median - d.median;
      // Each pair ran back to back: the median of their differences is steadier under a shared machine's load drift.
      const paired = stats("", "ms", routed.map((x, i) => x - direct[i]!)).median;
      summary.routingAddedMsPairedP50 = +paired.toFixed(3);
      const addedP95 = r.p95 - d.p95;
      summary.routingAddedMsP50 = +added.toFixed(3);
      summary.routingAddedMsP95 = +addedP95.toFixed(3);
      summary.routing = { n, directMedianMs: +d.median.toFixed(3), routedMedianMs: +r.median.toFixed(3) };
      notes.push(`routing adds ${added.toFixed(2)} ms at p50 (target ≤ 1 ms), ${addedP95.toFixed(2)} ms at p95 (n=${n} each, interleaved, after ${warm} warm-up rounds; keep-alive client); median of the per-pair differences ${paired.toFixed(2)} ms`);
      notes.push(`a bare Node reverse proxy hop (no agentbox code) adds ${bareAdded.toFixed(2)} ms at p50 (per-pair ${barePaired.toFixed(2)} ms) in the same run: the floor of any extra hop on this machine; routing's own share beyond it ${(added - bareAdded).toFixed(2)} ms`);
    }

    // 2. Creates per second: K concurrent nano python creates, cluster vs one plain server.
    {
      const k = quick ? 10 : 20;
      const rounds = 1;
      progress("cluster: starting a single non-clustered agentbox serve with the same flags");
      const single = await spawnServer(["--state-dir", singleStateDir, ...COMMON_ARGS], env);
      const killSingle = (signal: NodeJS.Signals = "SIGKILL") =>
        new Promise<void>((resolve) => {
          if (single.proc.exitCode !== null || single.proc.signalCode !== null) return resolve();
          single.proc.once("exit", () => resolve());
          single.proc.kill(signal);
        });
      procs.push({ kill: killSingle });
      // Warm-up: one create/run/delete on every process (builds nothing twice; fills the pools).
      for (const base of [...nodes.map((x) => x.url), single.url]) {
        const sb = await json<Info>(base, "POST", "/sandboxes", { language: "python" });
        await json(base, "POST", `/sandboxes/${sb.id}/run`, { code: "1" });
        await json(base, "DELETE", `/sandboxes/${sb.id}`);
      }
      await quiet([...pids(), single.proc.pid!]);
      type Mode = "one entry" | "round-robin" | "single";
      const modes: Mode[] = ["one entry", "round-robin", "single"];
      const wall: Record<Mode, number[]> = { "one entry": [], "round-robin": [], single: [] };
      const spread: Record<Mode, string[]> = { "one entry": [], "round-robin": [], single: [] };
      const each: Record<Mode, number[]> = { "one entry": [], "round-robin": [], single: [] };
      const errors: string[] = [];
      for (let round = 0; round < rounds; round++) {
        for (const mode of modes) {
          progress(`cluster: ${k} concurrent creates, ${mode === "single" ? "single server" : `cluster, ${mode}`} (round ${round + 1}/${rounds})`);
          const entry = (i: number) => (mode === "single" ? single.url : mode === "one entry" ? nodes[0]!.url : nodes[i % nodes.length]!.url);
          const made: { base: string; info: Info }[] = [];
          const [ms] = await timedMs(() =>
            Promise.all(
              Array.from({ length: k }, async (_, i) => {
                try {
                  const [one, info] = await timedMs(() => json<Info>(entry(i), "POST", "/sandboxes", { language: "python" }, CREATE_TIMEOUT_MS));
                  each[mode].push(one);
                  made.push({ base: entry(i), info });
                } catch (e) {
                  errors.push(`${mode}: ${(e as Error).message}`);
                }
              }),
            ),
          );
          wall[mode].push(ms);
          spread[mode].push(tally(made.map((m) => m.info.node ?? "single")));
          await Promise.all(made.map((m) => json(m.base, "DELETE", `/sandboxes/${m.info.id}`).catch((e: Error) => errors.push(`${mode} delete: ${e.message}`))));
          await sleep(1300); // rooms published
          await quiet([...pids(), single.proc.pid!]); // pools refilled
        }
      }
      for (const mode of modes) {
        const label = mode === "single" ? "  baseline: single agentbox serve (no cluster)" : `cluster: 3 nodes, ${mode === "one entry" ? "all through node a" : "entry nodes round-robin a,b,c"}`;
        rows.push(stats(`${label}: ${k} concurrent nano python creates, wall`, "ms", wall[mode]));
      }
      const med = (xs: number[]) => stats("", "", xs).median;
      const perS = (mode: Mode) => (k * 1000) / med(wall[mode]);
      const c1 = perS("one entry");
      const cr = perS("round-robin");
      const s = perS("single");
      summary.creates = {
        k,
        rounds,
        pool: POOL,
        maxSandboxesPerProcess: MAX_SANDBOXES,
        wallMsMedian: { oneEntry: +med(wall["one entry"]).toFixed(1), roundRobin: +med(wall["round-robin"]).toFixed(1), single: +med(wall.single).toFixed(1) },
        createsPerSecond: { oneEntry: +c1.toFixed(2), roundRobin: +cr.toFixed(2), single: +s.toFixed(2) },
        ratioVsSingle: { oneEntry: +(c1 / s).toFixed(2), roundRobin: +(cr / s).toFixed(2) },
        eachCreateMs: Object.fromEntries(modes.map((m) => [m, each[m].map((x) => +x.toFixed(0))])),
        spread: { oneEntry: spread["one entry"], roundRobin: spread["round-robin"] },
        errors: errors.length,
      };
      notes.push(
        `creates/s (${k} concurrent, median of ${rounds} round(s)): cluster via node a ${c1.toFixed(1)}, cluster round-robin entries ${cr.toFixed(1)}, single server ${s.toFixed(1)}; ratio vs single ${(c1 / s).toFixed(2)}x / ${(cr / s).toFixed(2)}x`,
      );
      const lat = (m: Mode) => {
        if (each[m].length === 0) return "none succeeded";
        const r = stats("", "", each[m]);
        return `${r.median.toFixed(0)}/${r.p95.toFixed(0)}/${Math.max(...each[m]).toFixed(0)}`;
      };
      notes.push(`each create's own latency p50/p95/max ms — via node a: ${lat("one entry")}; round-robin: ${lat("round-robin")}; single: ${lat("single")}`);
      notes.push(`where the creates landed (per round) — via node a: ${spread["one entry"].join(" | ")}; round-robin: ${spread["round-robin"].join(" | ")}`);
      if (spread["one entry"].every((x) => x === `a:${k}`)) {
        notes.push(`placement: a burst through one entry node stayed on that node (a node's own in-flight creates are not counted against its room, which it publishes once a second)`);
      }
      notes.push(`every process: --pool ${POOL} --max-sandboxes ${MAX_SANDBOXES} (so the cluster has ${POOL * 3} pooled python workers to the single server's ${POOL}); all on one 2-core machine, so 3 nodes add no CPU`);
      if (errors.length) {
        notes.push(`create/delete errors: ${errors.length} of ${k * rounds * modes.length} creates (by mode: ${tally(errors.map((e) => e.split(":")[0]))}; first: ${errors[0]!.slice(0, 300)})`);
        process.exitCode = 1;
      }
      await killSingle("SIGTERM");
    }

    // 3. Node death: SIGKILL a node holding sandboxes; a survivor answers 410 once its lease ends.
    {
      const reps = quick ? 1 : 3;
      const victimId = "c";
      const goneMs: number[] = [];
      const firstNon200: number[] = [];
      const seenStatuses: string[] = [];
      for (let rep = 0; rep < reps; rep++) {
        if (rep > 0) {
          progress(`cluster: restarting node ${victimId}`);
          nodes = [...nodes.filter((x) => x.id !== victimId), await start(victimId)].sort((x, y) => x.id.localeCompare(y.id));
          await converged(["a", "b", "c"]);
        }
        const victim = by(victimId);
        const survivor = nodes.find((x) => x !== victim)!;
        // Created through the victim (placed there on a tie); any that land elsewhere are deleted.
        const mine: Info[] = [];
        for (let i = 0; i < 6 && mine.length < 2; i++) {
          const sb = await json<Info>(victim.url, "POST", "/sandboxes", { language: "python" });
          if (sb.node === victimId) mine.push(sb);
          else await json(survivor.url, "DELETE", `/sandboxes/${sb.id}`);
        }
        if (mine.length === 0) throw new Error(`bench cluster: no create landed on node ${victimId}`);
        for (const m of mine) await json(survivor.url, "POST", `/sandboxes/${m.id}/run`, { code: "1" });
        progress(`cluster: SIGKILL node ${victimId} (${mine.length} sandboxes), polling ${survivor.id} every 50 ms (rep ${rep + 1}/${reps})`);
        const t0 = performance.now();
        const statuses: Record<string, number> = {};
        let first: number | undefined;
        await victim.kill("SIGKILL");
        let done = false;
        while (!done) {
          if (performance.now() - t0 > (LEASE_S + 15) * 1000) throw new Error(`bench cluster: no 410 within ${LEASE_S + 15} s of the kill`);
          const codes = await Promise.all(
            mine.map((m) =>
              req(survivor.url, "GET", `/sandboxes/${m.id}`, undefined, 10_000).then(
                async (r) => (await r.arrayBuffer(), String(r.status)),
                (e: Error) => (e.name === "TimeoutError" ? "hung" : "err"),
              ),
            ),
          );
          for (const c of codes) statuses[c] = (statuses[c] ?? 0) + 1;
          if (first === undefined && codes.some((c) => c !== "200")) first = performance.now() - t0;
          if (codes.every((c) => c === "410")) {
            goneMs.push(performance.now() - t0);
            done = true;
          } else await sleep(50);
        }
        firstNon200.push(first ?? NaN);
        seenStatuses.push(Object.entries(statuses).map(([c, n]) => `${c}×${n}`).join(" "));
        const body = (await (await req(survivor.url, "POST", `/sandboxes/${mine[0]!.id}/run`, { code: "1" })).json()) as { error?: { code?: string } };
        if (body.error?.code !== "NODE_GONE") throw new Error(`bench cluster: after 410, a run answered ${JSON.stringify(body)}`);
        for (const m of mine) await req(survivor.url, "DELETE", `/sandboxes/${m.id}`).then((r) => r.arrayBuffer());
      }
      rows.push(stats(`cluster: SIGKILL a node → its sandboxes answer 410 via a survivor (--lease-ttl ${LEASE_S}s, polled every 50 ms)`, "ms", goneMs));
      const med = stats("", "", goneMs).median;
      summary.nodeDeath = { leaseTtlMs: LEASE_S * 1000, reps, killTo410Ms: goneMs.map((x) => +x.toFixed(0)), firstNon200Ms: firstNon200.map((x) => +x.toFixed(0)), statuses: seenStatuses };
      summary.killTo410MsMedian = +med.toFixed(0);
      notes.push(`node death: lease TTL ${LEASE_S} s; kill → 410 ${goneMs.map((x) => x.toFixed(0)).join(", ")} ms (median ${med.toFixed(0)} ms = ${((med / (LEASE_S * 1000)) * 100).toFixed(0)}% of the TTL, ${Math.abs(med - LEASE_S * 1000).toFixed(0)} ms ${med >= LEASE_S * 1000 ? "after" : "before"} it ends, counted from the kill; the lease was last renewed before the kill)`);
      notes.push(`node death: first non-200 answer after ${firstNon200.map((x) => x.toFixed(0)).join(", ")} ms; statuses seen while polling: ${seenStatuses.join(" | ")}`);
    }
  } finally {
    await Promise.all(procs.map((p) => p.kill("SIGKILL")));
    await etcd?.close();
    fs.rmSync(stateDir, { recursive: true, force: true });
    fs.rmSync(singleStateDir, { recursive: true, force: true });
  }
  return { rows, notes, summary };
}

export const cluster: Section = { name: "cluster", run: runSection };
