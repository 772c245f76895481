// `agentbox snapshot list|rm --state-dir DIR`: the snapshots (and paused sandboxes) a server
// keeps in its state directory (`agentbox serve --state-dir DIR`), read with the server's own
// checks (server/state.ts: sizes and checksums; a damaged entry is moved aside and named). Meant
// for a stopped server's directory; a running server sees a removal only at its next start (use
// DELETE /snapshots/{id} against a running one).
import { parseArgs } from "node:util";
import { StateDir, type StateKind } from "../server/state.js";
import { UsageError } from "./flags.js";
import type { Io } from "./main.js";

const USAGE = `usage: agentbox snapshot list --state-dir DIR [--paused] [--json]
       agentbox snapshot rm --state-dir DIR ID...

The snapshots a server started with \`agentbox serve --state-dir DIR\` keeps (with --paused: its
paused sandboxes). Run it on a stopped server's directory: a running server sees a removal at its
next start (delete through its API instead: DELETE /snapshots/{id}).`;

function time(v: unknown): string {
  return typeof v === "number" ? new Date(v).toISOString() : "-";
}

export async function snapshotCommand(argv: string[], io: Io): Promise<number> {
  try {
    return await snapshots(argv, io);
  } catch (e) {
    io.stderr(`agentbox snapshot: ${(e as Error).message}\n`);
    if (e instanceof UsageError) {
      io.stderr(`\n${USAGE}\n`);
      return 64;
    }
    return 70;
  }
}

async function snapshots(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  let parsed;
  try {
    parsed = parseArgs({ args: rest, allowPositionals: true, strict: true, options: { "state-dir": { type: "string" }, paused: { type: "boolean" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } } });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values;
  if (v.help || sub === "-h" || sub === "--help" || sub === undefined) {
    io.stdout(`${USAGE}\n`);
    return sub === undefined && !v.help ? 64 : 0;
  }
  if (sub !== "list" && sub !== "rm") throw new UsageError(`snapshot: unknown subcommand ${JSON.stringify(sub)} (list or rm)`);
  if (!v["state-dir"]) throw new UsageError("snapshot: --state-dir DIR is required (the directory given to agentbox serve --state-dir)");
  const state = StateDir.open(v["state-dir"], (line) => io.stderr(`agentbox snapshot: ${line}\n`));
  const kind: StateKind = v.paused ? "paused" : "snapshots";
  if (sub === "list") {
    if (parsed.positionals.length > 0) throw new UsageError("snapshot list takes no positional arguments");
    const entries = await state.entries(kind);
    if (v.json) {
      io.stdout(`${JSON.stringify(entries.map((e) => ({ id: e.id, ...e.info })))}\n`);
      return 0;
    }
    for (const e of entries) io.stdout(`${e.id}  owner=${String(e.info.owner ?? "-")}  created=${time(e.info.createdAt)}  expires=${time(e.info.expiresAt)}\n`);
    if (entries.length === 0) io.stderr(`agentbox snapshot: no ${kind === "paused" ? "paused sandboxes" : "snapshots"} in ${state.root}\n`);
    return 0;
  }
  if (parsed.positionals.length === 0) throw new UsageError("snapshot rm needs at least one ID");
  let missing = 0;
  for (const id of parsed.positionals) {
    if (!state.has(kind, id)) {
      io.stderr(`agentbox snapshot: no ${kind === "paused" ? "paused sandbox" : "snapshot"} ${JSON.stringify(id)} in ${state.root}\n`);
      missing++;
      continue;
    }
    state.remove(kind, id);
    io.stdout(`${id}\n`);
  }
  return missing > 0 ? 1 : 0;
}
