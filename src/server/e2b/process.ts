// envd's process service (process.Process) over Connect: commands on the sandbox's heavy tier.
import type { Hono } from "hono";
import type { E2bOptions, SandboxEnv } from "./index.js";

export function registerProcess(app: Hono<SandboxEnv>, o: E2bOptions): void {
  void app;
  void o;
}
