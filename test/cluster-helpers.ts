// A real cluster on loopback for tests and the bench: an etcd cluster of N members (Debian's
// etcd-server; CI installs it) and agentbox nodes as separate `agentbox serve --cluster`
// processes, so a node can be killed with SIGKILL as a crashed machine would be.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { spawnServer } from "./server-helpers.js";

/** Why a cluster cannot run here (no etcd binary), or undefined. */
export function etcdUnavailableReason(): string | undefined {
  const r = spawnSync("etcd", ["--version"], { encoding: "utf8" });
  return r.status === 0 ? undefined : "etcd is not installed (Debian: apt-get install etcd-server; .ci/run installs it)";
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface EtcdMember {
  name: string;
  clientUrl: string;
  proc: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Start it again (same name, ports and data directory) after kill(). */
  restart(): void;
}

export interface EtcdCluster {
  members: EtcdMember[];
  /** `etcd://127.0.0.1:P1,127.0.0.1:P2,...` as `--cluster` takes it. */
  spec: string;
  close(): Promise<void>;
}

/** An etcd cluster of `n` members on loopback ports, each with its own data directory; resolves once it answers. */
export async function startEtcd(n = 3): Promise<EtcdCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-etcd-"));
  const ports = await Promise.all(Array.from({ length: n * 2 }, () => freePort()));
  const names = Array.from({ length: n }, (_, i) => `m${i + 1}`);
  const peer = (i: number) => `http://127.0.0.1:${ports[2 * i + 1]}`;
  const initial = names.map((name, i) => `${name}=${peer(i)}`).join(",");
  const members: EtcdMember[] = names.map((name, i) => {
    const clientUrl = `http://127.0.0.1:${ports[2 * i]}`;
    const args = [
        `--name=${name}`,
        `--data-dir=${path.join(dir, name)}`,
        `--listen-client-urls=${clientUrl}`,
        `--advertise-client-urls=${clientUrl}`,
        `--listen-peer-urls=${peer(i)}`,
        `--initial-advertise-peer-urls=${peer(i)}`,
        `--initial-cluster=${initial}`,
        "--initial-cluster-state=new",
        "--initial-cluster-token=agentbox-test",
        // Tests want quick elections on a loaded 2-core machine, not WAN defaults.
        "--heartbeat-interval=100",
        "--election-timeout=1000",
    ];
    const launch = () => {
      const proc = spawn("etcd", args, { stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      proc.stderr!.on("data", (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
      proc.on("exit", (code, sig) => {
        if (code !== 0 && sig === null) process.stderr.write(`etcd ${name} exited ${code}: ${err}\n`);
      });
      return proc;
    };
    const member: EtcdMember = {
      name,
      clientUrl,
      proc: launch(),
      kill: (signal: NodeJS.Signals = "SIGKILL") =>
        new Promise<void>((resolve) => {
          const proc = member.proc;
          if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
          proc.once("exit", () => resolve());
          proc.kill(signal);
        }),
      restart: () => {
        member.proc = launch();
      },
    };
    return member;
  });
  const spec = `etcd://${members.map((m) => new URL(m.clientUrl).host).join(",")}`;
  // Ready when every member reports health (a leader is elected).
  const deadline = Date.now() + 30_000;
  for (const m of members) {
    for (;;) {
      const ok = await fetch(`${m.clientUrl}/health`, { signal: AbortSignal.timeout(2000) })
        .then(async (r) => r.ok && ((await r.json()) as { health?: string }).health === "true")
        .catch(() => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`etcd member ${m.name} did not become healthy`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    members,
    spec,
    close: async () => {
      await Promise.all(members.map((m) => m.kill("SIGKILL")));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Node {
  id: string;
  url: string;
  proc: ChildProcess;
  stderr: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** `agentbox serve --cluster SPEC --node-id ID ...` as its own process; resolves once it has joined. */
export async function startNode(spec: string, id: string, args: string[] = [], env: Record<string, string> = {}): Promise<Node> {
  const { proc, url, stderr } = await spawnServer(["--cluster", spec, "--node-id", id, ...args], env);
  return {
    id,
    url,
    proc,
    stderr,
    kill: (signal: NodeJS.Signals = "SIGKILL") =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        proc.once("exit", () => resolve());
        proc.kill(signal);
      }),
  };
}

/** Poll `check` until it returns a value (not undefined) or `ms` pass. */
export async function until<T>(check: () => Promise<T | undefined>, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
