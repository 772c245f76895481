// Helpers shared by the integration and security tests.
import { after } from "node:test";
import { Sandbox } from "../src/index.js";

export function isAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once `pid` has exited (or rejects after `ms`). */
export async function waitGone(pid: number | undefined, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() > end) throw new Error(`process ${pid} still alive after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Every test file that creates sandboxes stops the shared pool when it ends. */
after(async () => {
  await Sandbox.shutdownPool();
});
