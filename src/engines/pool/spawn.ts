// How a worker process is started (the command line, its environment, its pipes), and the one
// worker a short-lived process may start before it has loaded the rest of the library (the
// one-shot CLI: its Python worker boots while the host imports its modules). Imports only leaves,
// so that early start costs the CLI nothing of its own start-up.
import { spawn, type ChildProcess } from "node:child_process";
import { networkIsolation } from "./netns.js";

export interface WorkerSpawnSpec {
  script: string;
  args: string[];
  nodeFlags: string[];
  /**
   * Start at a low CPU priority (nice BACKGROUND_NICE), every thread of it: a pool's refill, which
   * must not slow the sandboxes that are running (their round trips wait on wake-ups the booting
   * worker would compete with). `WorkerProcess.foreground()` restores normal priority when it is taken.
   */
  background?: boolean;
}

/** The niceness of a background (pool refill) worker while it boots and waits. */
export const BACKGROUND_NICE = 10;

/** False once restoring a taken worker's priority was refused (no CAP_SYS_NICE): refills then start at normal priority. */
let canRestorePriority = process.platform === "linux";

export function priorityRestoreRefused(): void {
  canRestorePriority = false;
}

/** Start the worker process `spec` describes; `niced` says whether it runs at BACKGROUND_NICE. */
export function spawnWorkerChild(spec: WorkerSpawnSpec): { child: ChildProcess; niced: boolean } {
  const niced = spec.background === true && canRestorePriority;
  // `nice` and `unshare --net -- node ...` exec in place: the child's pid is the worker's pid, and
  // every thread the worker starts inherits its priority.
  const [cmd, ...prefix] = [...(niced ? ["nice", "-n", String(BACKGROUND_NICE)] : []), ...networkIsolation().prefix, process.execPath];
  const child = spawn(cmd!, [...prefix, ...spec.nodeFlags, spec.script, ...spec.args], {
    stdio: ["pipe", "pipe", "pipe", "pipe"],
    // Nothing of the host's environment: no secrets, no proxies, a fixed time zone.
    env: { TZ: "UTC", LANG: "C.UTF-8" },
    cwd: "/",
  });
  return { child, niced };
}

const specKey = (spec: WorkerSpawnSpec) => JSON.stringify([spec.script, spec.args, spec.nodeFlags, spec.background === true]);

let early: { key: string; child: ChildProcess; failed: boolean } | undefined;

/**
 * Start a worker now, for the first `takeEarlyWorker` asked for exactly this spec (script,
 * arguments and every Node flag equal). Until then it is unref'd, and killed if this process
 * exits without taking it.
 */
export function spawnEarlyWorker(spec: WorkerSpawnSpec): ChildProcess | undefined {
  if (early) return undefined;
  const { child } = spawnWorkerChild({ ...spec, background: false });
  const e = { key: specKey(spec), child, failed: false };
  early = e;
  child.once("error", () => (e.failed = true)); // e.g. no `unshare`: the caller then starts its own
  child.unref();
  for (const s of child.stdio) (s as unknown as { unref?: () => void } | null)?.unref?.();
  process.once("exit", () => {
    if (early === e) child.kill("SIGKILL");
  });
  return child;
}

/** The early worker when it was started for exactly `spec` and is still alive; else undefined (and it is ended). */
export function takeEarlyWorker(spec: WorkerSpawnSpec): ChildProcess | undefined {
  const e = early;
  if (!e) return undefined;
  early = undefined;
  if (e.key === specKey(spec) && !e.failed && e.child.exitCode === null && e.child.signalCode === null) return e.child;
  e.child.kill("SIGKILL");
  return undefined;
}
