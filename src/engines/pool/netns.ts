// Network isolation for worker processes: each worker starts in a network namespace of its own
// (no interfaces up, not even loopback), so even a guest that escaped into the worker's
// JavaScript could open no connection. The Wasm socket imports are closed as well; this is the
// second wall. Needs Linux and either root or unprivileged user namespaces; detected once.
import { spawnSync } from "node:child_process";

export type NetworkIsolation = "netns" | "userns+netns" | "none";

let detected: { mode: NetworkIsolation; prefix: string[]; reason?: string } | undefined;

function probe(args: string[]): boolean {
  const r = spawnSync("unshare", [...args, "true"], { stdio: "ignore", timeout: 5000 });
  return r.status === 0;
}

function detect(): NonNullable<typeof detected> {
  if (process.platform !== "linux") return { mode: "none", prefix: [], reason: `no network namespaces on ${process.platform}` };
  if (process.env.AGENTBOX_NO_NETNS === "1") return { mode: "none", prefix: [], reason: "AGENTBOX_NO_NETNS=1" };
  if (probe(["--net"])) return { mode: "netns", prefix: ["unshare", "--net", "--"] };
  if (probe(["--map-root-user", "--net"])) return { mode: "userns+netns", prefix: ["unshare", "--map-root-user", "--net", "--"] };
  return { mode: "none", prefix: [], reason: "`unshare --net` failed (not root and no unprivileged user namespaces, or util-linux missing)" };
}

/** The command prefix that starts a process in a fresh network namespace ([] when unavailable). */
export function networkIsolation(): { mode: NetworkIsolation; prefix: string[]; reason?: string } {
  detected ??= detect();
  return detected;
}
