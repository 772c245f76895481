// Helpers shared by the server, MCP and Python-client tests: child processes and a spawned server.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../bin/agentbox.js", import.meta.url));

/** Processes whose parent is `parent` (from /proc): the worker processes a host has spawned. */
export function childPids(parent = process.pid): number[] {
  const out: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === parent) out.push(Number(d));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Start `agentbox serve --port 0 ...`; resolves with the process and its URL once it listens. */
export async function spawnServer(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ proc: ChildProcess; url: string; stderr: () => string }> {
  const proc = spawn(process.execPath, [BIN, "serve", "--port", "0", ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once("exit", (code) => reject(new Error(`serve exited (${code}) before listening: ${err}`)));
  });
  return { proc, url, stderr: () => err };
}
