// Helpers shared by the integration and security tests.
import { after } from "node:test";
import { Sandbox } from "../src/index.js";
import { cacheDir } from "../src/engines/cache.js";

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

/**
 * The environment of an agentbox process a test starts, passed explicitly: the test's own
 * variables with the cache directory named. Clients such as the MCP SDK's stdio transport pass
 * only a reduced default environment (HOME, PATH, ...) unless given one, and then a server
 * would look for its images and snapshots somewhere else than this test run built them.
 */
export function agentboxEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  return { ...env, AGENTBOX_CACHE_DIR: cacheDir(), ...extra };
}
