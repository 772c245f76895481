// The face of E2B's in-sandbox daemon (envd, port 49983): its Connect services (process.ts,
// filesystem.ts) and its plain HTTP routes (/health, /files), each on the sandbox the request
// was routed to (index.ts).
import { Hono } from "hono";
import type { E2bOptions, SandboxEnv } from "./index.js";
import { registerFilesystem } from "./filesystem.js";
import { registerProcess } from "./process.js";

export function envdApp(o: E2bOptions): Hono<SandboxEnv> {
  const app = new Hono<SandboxEnv>();
  app.get("/health", (c) => c.body(null, 204));
  registerProcess(app, o);
  registerFilesystem(app, o);
  app.notFound((c) => c.json({ code: 404, message: `agentbox's envd face has no route ${c.req.method} ${c.req.path}` }, 404));
  return app;
}
