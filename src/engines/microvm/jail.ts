// Host-side confinement of a VMM process: a cgroup with a memory and a CPU cap (heavy/cgroups.ts,
// shared with the gVisor backend) that the process enters before it execs the VMM, and a network
// namespace of its own (pool/netns.ts, as for nano workers), so a compromised VMM has no network
// either.
import type { HostCgroup } from "../heavy/cgroups.js";
import { networkIsolation } from "../pool/netns.js";

/** The cgroup directory (under each hierarchy) that holds VMM processes. */
export const CGROUP_PARENT = "agentbox-microvm";

/**
 * argv that enters the cgroup, then the network namespace, then execs `argv`: the VMM never
 * runs a single instruction outside its caps.
 */
export function jailedArgv(cg: HostCgroup | undefined, argv: string[]): string[] {
  const enter = (cg?.procsFiles() ?? []).map((f) => `echo $$ > '${f}'`).join(" && ");
  return ["/bin/sh", "-c", `${enter ? `${enter} && ` : ""}exec "$@"`, "agentbox-vmm", ...networkIsolation().prefix, ...argv];
}
