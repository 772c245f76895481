// The user's cache directory for everything agentbox builds once per machine (interpreter
// snapshots, heavy-tier images): $AGENTBOX_CACHE_DIR, else $XDG_CACHE_HOME/agentbox, else
// ~/.cache/agentbox.
import os from "node:os";
import path from "node:path";

export function cacheDir(): string {
  if (process.env.AGENTBOX_CACHE_DIR) return path.resolve(process.env.AGENTBOX_CACHE_DIR);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(base, "agentbox");
}
