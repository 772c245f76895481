// When a long-running command (`agentbox serve`, `agentbox mcp`) must stop: on SIGTERM or SIGINT,
// and when the process that started it goes away. `npx agentbox serve` runs the server under
// `npm exec` and a `sh -c`; a process manager's SIGTERM ends those two and re-parents the server
// to init, where it would live on with every sandbox it holds. Node has no parent-death signal,
// so the parent's pid is polled (cheap: a getppid() per tick, on an unref'd timer).

export type StopReason = "SIGTERM" | "SIGINT" | "parent exited";

/** How often the parent's pid is checked. */
const PARENT_POLL_MS = 500;

/**
 * An AbortSignal that fires once the process should stop; `signal.reason` is the StopReason.
 * `parentPid` is the pid to watch (the parent at start by default).
 */
export function stopSignal(parentPid: number = process.ppid): AbortSignal {
  const ac = new AbortController();
  const stop = (why: StopReason) => {
    clearInterval(timer);
    process.off("SIGTERM", onTerm);
    process.off("SIGINT", onInt);
    if (!ac.signal.aborted) ac.abort(why);
  };
  const onTerm = () => stop("SIGTERM");
  const onInt = () => stop("SIGINT");
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", onInt);
  // A parent that went away leaves the process re-parented (to init or a subreaper): ppid changes.
  const timer = setInterval(() => {
    if (process.ppid !== parentPid) stop("parent exited");
  }, PARENT_POLL_MS);
  timer.unref();
  return ac.signal;
}

/** Resolves with the reason once `signal` fires. */
export function stopped(signal: AbortSignal): Promise<StopReason> {
  if (signal.aborted) return Promise.resolve(signal.reason as StopReason);
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(signal.reason as StopReason), { once: true }));
}
