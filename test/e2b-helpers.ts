// The E2B-compatible surface under test: an in-process `agentbox serve` with one API key in E2B's
// `e2b_` + hex form, and the three environment variables E2B's SDKs read pointed at it, as a user
// would set them (nothing else: the SDKs are used unchanged, with their defaults).
import { KeyRing, startServer, type RunningServer } from "../src/server/index.js";

export const E2B_KEY = `e2b_${"5f".repeat(20)}`;

export interface E2bServer {
  server: RunningServer;
  /** The three variables, as `agentbox serve` prints them (for a child process's env). */
  env: { E2B_API_URL: string; E2B_SANDBOX_URL: string; E2B_API_KEY: string };
  close(): Promise<void>;
}

/** Start a server and point this process's E2B SDKs at it (restored by close()). */
export async function startE2bServer(opts: { netAllow?: string[]; maxUploadBytes?: number } = {}): Promise<E2bServer> {
  const server = await startServer({
    port: 0,
    keys: KeyRing.fromEntries([{ name: "e2b-user", key: E2B_KEY }]),
    netAllow: opts.netAllow ?? [],
    log: () => undefined,
    ...(opts.maxUploadBytes !== undefined ? { maxUploadBytes: opts.maxUploadBytes } : {}),
  });
  const env = { E2B_API_URL: `${server.url}/e2b`, E2B_SANDBOX_URL: `${server.url}/e2b/sandbox`, E2B_API_KEY: E2B_KEY };
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  return {
    server,
    env,
    close: async () => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await server.close();
    },
  };
}
