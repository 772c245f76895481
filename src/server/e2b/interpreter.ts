// The code interpreter's face (port 49999): /execute streaming NDJSON, and code contexts.
import { Hono } from "hono";
import type { E2bOptions, SandboxEnv } from "./index.js";

export function interpreterApp(o: E2bOptions): Hono<SandboxEnv> {
  const app = new Hono<SandboxEnv>();
  void o;
  app.notFound((c) => c.json({ code: 404, message: `agentbox's code interpreter face has no route ${c.req.method} ${c.req.path}` }, 404));
  return app;
}
