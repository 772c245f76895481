// Helpers shared by the integration and security tests.
import assert from "node:assert/strict";
import { after } from "node:test";
import { FileSystemError, InvalidOptionsError, Sandbox } from "../src/index.js";
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

/**
 * The files API's one path rule, the same on every engine: a path that is relative, has a `..`
 * segment or a NUL byte is refused with InvalidOptionsError naming it (never resolved, so nothing
 * lands at /x.txt); `.` segments and repeated slashes are normalised.
 */
export async function checkGuestPathRule(sb: Sandbox): Promise<void> {
  const ops: ((p: string) => Promise<unknown>)[] = [
    (p) => sb.files.write(p, "escaped?"),
    (p) => sb.files.read(p),
    (p) => sb.files.list(p),
    (p) => sb.files.exists(p),
    (p) => sb.files.remove(p),
    (p) => sb.files.makeDir(p),
  ];
  for (const p of ["/../../x.txt", "/tmp/../x.txt", "/tmp/..", "x.txt", "/tmp/x\0.txt"]) {
    for (const op of ops) {
      await assert.rejects(op(p), (e: unknown) => e instanceof InvalidOptionsError && e.message.includes(JSON.stringify(p)) && /no "\.\." segment/.test(e.message), p);
    }
  }
  assert.equal(await sb.files.exists("/x.txt"), false);
  await sb.files.write("/tmp/./a//b.txt", "ok");
  assert.equal(await sb.files.read("/tmp/a/b.txt"), "ok");
}

/** files.makeDir is `mkdir -p` on every engine: fine over a directory, EEXIST over a file. */
export async function checkMakeDirOverFile(sb: Sandbox): Promise<void> {
  const errno = (code: string) => (e: unknown) => e instanceof FileSystemError && e.errno === code;
  await sb.files.write("/tmp/mk/f.txt", "x");
  await assert.rejects(sb.files.makeDir("/tmp/mk/f.txt"), errno("EEXIST"));
  await assert.rejects(sb.files.makeDir("/tmp/mk/f.txt/sub"), errno("ENOTDIR"));
  await assert.rejects(sb.files.write("/tmp/mk/f.txt/sub/g.txt", "y"), errno("ENOTDIR"));
  assert.equal(await sb.files.read("/tmp/mk/f.txt"), "x");
  await sb.files.makeDir("/tmp/mk/d/e");
  await sb.files.makeDir("/tmp/mk/d/e");
  await sb.files.makeDir("/tmp/mk");
  await sb.files.makeDir("/");
  assert.deepEqual((await sb.files.list("/tmp/mk")).map((e) => `${e.name}:${e.type}`), ["d:dir", "f.txt:file"]);
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
