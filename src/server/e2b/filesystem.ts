// envd's filesystem service (filesystem.Filesystem) over Connect, and its /files upload and download.
import type { Hono } from "hono";
import type { E2bOptions, SandboxEnv } from "./index.js";

export function registerFilesystem(app: Hono<SandboxEnv>, o: E2bOptions): void {
  void app;
  void o;
}
