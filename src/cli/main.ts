// The `agentbox` command line: a thin layer over the public API (parse, call, print, exit code).
//   agentbox run FILE | -c CODE [--language python|javascript|typescript] [--memory MB] [--timeout 5s] [--seed N] [--mount host:guest[:rw]] [--results-dir DIR] [--json]
//   agentbox serve [--host H] [--port P] [--keys FILE] ...   (HTTP API, src/server/)
//   agentbox mcp [--memory MB] [--timeout 5s] ...             (MCP over stdio, src/mcp/)
// Exit codes: 0 ok, 1 the guest raised, 2 a limit was hit, 64 bad usage, 70 internal failure.
// Each command is a function (argv after the command name, io) → exit code, listed in COMMANDS.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { AgentboxError, InvalidOptionsError, LANGUAGES, LimitError, Sandbox, type DisplayResult, type Language, type RunResult, type SandboxOptions } from "../index.js";
import type { McpSessionOptions } from "../mcp/index.js";
import type { RunningServer } from "../server/index.js";
import { CLUSTER_DEFAULTS, SERVER_DEFAULTS } from "../server/defaults.js";
import { languageOfFile } from "./languages.js";
import { flagError, flagHelp, flagOptions, parseDuration, parseInteger, readFlags, UsageError, type FlagName, type ReadFlags } from "./flags.js";
import { stopped, stopSignal } from "./lifecycle.js";
import { errorJson } from "./output.js";
import { ResultFiles } from "./results.js";

const RUN_FLAGS = ["code", "language", "tier", "backend", "image", "memory", "timeout", "cpus", "disk", "packages", "seed", "mount", "env", "allow-net", "deny-net", "results-dir", "json", "help"] as const satisfies FlagName[];
const MCP_FLAGS = ["tier", "backend", "image", "memory", "timeout", "cpus", "disk", "packages", "seed", "mount", "env", "allow-net", "deny-net", "help"] as const satisfies FlagName[];
const D = SERVER_DEFAULTS;

const USAGE = `usage: agentbox <command> [options]

commands:
  run (FILE | -c CODE)   run code in a fresh sandbox and print its output
  serve                  serve sandboxes over HTTP (see serve options)
  mcp                    MCP server over stdio with run/file tools (see mcp options;
                         --tier heavy: Python in a Debian userland plus a run_command tool;
                         --tier auto: Python on nano, moved to heavy when code needs it)
  exec --tier heavy -- CMD...  run a command in a fresh heavy-tier sandbox (agentbox exec -h)
  image build|list|rm    the heavy tier's Debian images (agentbox image -h)
  snapshot list|rm       a server's saved snapshots in its --state-dir (agentbox snapshot -h)

run options:
${flagHelp(RUN_FLAGS)}

mcp options (every session sandbox):
${flagHelp(MCP_FLAGS)}

serve options:
  --host HOST            address to listen on (default ${D.host}; non-loopback needs API keys)
  --port PORT            port (default ${D.port}; 0 picks a free one)
  --keys FILE            API keys, JSON {"keys":[{"name","key"|"sha256","maxSandboxes","maxMemoryMb","maxRunMs","maxCpus","maxDiskMb","maxSnapshots","maxSnapshotMb","allowNet"}]}
                         (else $AGENTBOX_API_KEYS_FILE, or $AGENTBOX_API_KEYS: the same JSON or key1,key2)
  --max-sandboxes N      live sandboxes across all keys and tiers (default ${D.maxSandboxes}); creates past it queue
  --max-heavy N          live heavy-tier sandboxes (default ${D.maxHeavySandboxes}; each also counts in --max-sandboxes)
  --queue-timeout DURATION  how long a create waits for a slot before 429 (default ${D.queueTimeoutMs / 1000}s)
  --snapshot-ttl DURATION   how long a snapshot is kept before it is deleted (default ${D.snapshotTtlMs / 3600_000}h)
  --state-dir DIR        write snapshots and paused sandboxes to DIR (atomic, checksummed) and load them back at start
  --on-shutdown pause|kill  on SIGTERM/SIGINT: pause running sandboxes into --state-dir (default with it), or kill them
  --max-starts N         sandboxes starting at once (default: number of CPUs); others wait their turn
  --pool N               a fixed pool: N ready workers per language (0: no pool); else adaptive:
  --pool-min N           ready workers each language's pool keeps when idle (default ${D.poolMin})
  --pool-max N           most it grows to under a burst of creates (default ${D.poolMax})
  --pool-budget MB       ready workers of all pools together hold at most MB (default ${D.poolMemoryBudgetMb}; by measured RSS)
  --pool-idle DURATION   back to --pool-min after this long without creates from the pool (default ${D.poolIdleShrinkMs / 1000}s)
  --mount-root DIR       clients may mount (read-only) directories under DIR; repeatable
  --allow-net HOST       clients may grant sandboxes network access to HOST ([scheme://]host[:port]); repeatable
                         (a key's own "allowNet" list replaces it for that key)
  --cluster etcd://HOST:PORT[,HOST:PORT...]  join a cluster coordinated by etcd v3 (else $AGENTBOX_CLUSTER): any
                         node serves any sandbox; give every node the same --keys and a shared --state-dir
  --node-id NAME         this node's name in the cluster (default: the host name)
  --advertise URL        where the other nodes reach this one (default: the URL it listens on)
  --lease-ttl DURATION   a node that stops answering etcd leaves after this long; its sandboxes then answer 410 (default ${CLUSTER_DEFAULTS.leaseTtlMs / 1000}s)
  --gone-retention DURATION  a node gone from the cluster: its running sandboxes answer 410 this long, then 404
                         (their records are removed; default ${CLUSTER_DEFAULTS.goneRetentionMs / 3_600_000}h)
  --cluster-prefix P     etcd key prefix, to keep clusters sharing one etcd apart (default ${CLUSTER_DEFAULTS.prefix})

exit codes: 0 ok, 1 the code raised, 2 a limit was hit, 64 bad usage, 70 internal error`;

export const EXIT = { ok: 0, guestError: 1, limit: 2, usage: 64, internal: 70 } as const;

export { parseDuration, parseMount } from "./flags.js";

/** The language to run: --language if given, else from the file's extension, else python. */
export function pickLanguage(flag: string | undefined, file: string | undefined): Language {
  if (flag !== undefined) {
    if (!(LANGUAGES as readonly string[]).includes(flag)) throw new UsageError(`--language: expected one of ${LANGUAGES.join(", ")}, got ${JSON.stringify(flag)}`);
    return flag as Language;
  }
  return languageOfFile(file);
}

export interface Io {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export type Command = (argv: string[], io: Io) => Promise<number>;

/**
 * Every subcommand. A new surface (serve, mcp, image, exec) adds its entry here. What only one
 * command needs (the HTTP server, the MCP SDK, the image builder) is imported when it runs, so a
 * one-shot `agentbox run` loads none of it (~0.4 s of start-up it spent on them before).
 */
const COMMANDS: Record<string, Command> = {
  run: runCommand,
  serve: serveCommand,
  mcp: mcpCommand,
  exec: async (argv, io) => (await import("./heavy.js")).execCommand(argv, io),
  image: async (argv, io) => (await import("./heavy.js")).imageCommand(argv, io),
  snapshot: async (argv, io) => (await import("./snapshots.js")).snapshotCommand(argv, io),
};

export async function main(argv: string[], io: Io = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) }): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    io.stderr(`agentbox: missing command\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  if (cmd === "-h" || cmd === "--help" || cmd === "help") {
    io.stdout(`${USAGE}\n`);
    return EXIT.ok;
  }
  const command = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (!command) {
    io.stderr(`agentbox: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  return command(rest, io);
}

async function runCommand(argv: string[], io: Io): Promise<number> {
  let args: ReadFlags;
  try {
    args = readFlags(argv, RUN_FLAGS);
  } catch (e) {
    io.stderr(`agentbox: ${(e as Error).message}\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  if (args.values.help) {
    io.stdout(`${USAGE}\n`);
    return EXIT.ok;
  }
  const json = Boolean(args.values.json);
  let sb: Sandbox | undefined;
  let files: ResultFiles | undefined;
  /** Per result, where it was written (null: it could not be). */
  const paths: (string | null)[] = [];
  try {
    const rest = args.positionals;
    const inline = args.values.code;
    if ((inline === undefined) === (rest.length === 0)) throw new UsageError("give exactly one of FILE or -c CODE");
    if (rest.length > 1) throw new UsageError("give one FILE");
    let code: string;
    if (inline !== undefined) code = inline;
    else {
      try {
        code = readFileSync(rest[0]!, "utf8");
      } catch (e) {
        throw new UsageError(`cannot read ${rest[0]}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
    const options = flagOptions(args, RUN_FLAGS);
    const language = pickLanguage(args.values.language, rest[0]);
    const dir = args.values["results-dir"];
    try {
      files = new ResultFiles(dir);
    } catch (e) {
      throw new UsageError(`--results-dir: cannot make ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const out = files;
    // Each result is written as it happens (a chart shows up while a long run goes on).
    const onResult = (res: DisplayResult) => {
      try {
        const f = out.write(res);
        paths.push(f?.path ?? null);
        if (f && !json) io.stderr(`agentbox: result ${f.index} (${f.mimeTypes.join(", ")}): ${f.path}\n`);
      } catch (e) {
        paths.push(null);
        io.stderr(`agentbox: cannot write result ${paths.length}: ${(e as Error).message}\n`);
      }
    };
    await Sandbox.configurePool({ size: 0 });
    sb = await Sandbox.create({ ...options, language, pool: false } as SandboxOptions).catch((e: unknown) => {
      throw e instanceof InvalidOptionsError ? flagError(e, RUN_FLAGS) : e;
    });
    const r = await sb.runCode(code, json ? { onResult } : { onStdout: io.stdout, onStderr: io.stderr, onResult });
    if (json) io.stdout(`${JSON.stringify({ ...r, ...resultFilesJson(files, paths) })}\n`);
    else printTail(r, io);
    if (paths.includes(null)) return EXIT.internal;
    return r.limitHit ? EXIT.limit : r.error ? EXIT.guestError : EXIT.ok;
  } catch (e) {
    const code = e instanceof UsageError || e instanceof InvalidOptionsError ? EXIT.usage : e instanceof LimitError ? EXIT.limit : EXIT.internal;
    if (json) {
      const err = e as AgentboxError;
      io.stdout(`${JSON.stringify({ ...errorJson(err, code), ...resultFilesJson(files, paths) })}\n`);
    } else {
      io.stderr(`agentbox: ${(e as Error).message}\n`);
      if (code === EXIT.usage) io.stderr(`\n${USAGE}\n`);
    }
    return code;
  } finally {
    await sb?.kill();
  }
}

/** `--json`: where the run's results were written, when it had any (`resultFiles[i]` is `results[i]`'s file). */
function resultFilesJson(files: ResultFiles | undefined, paths: (string | null)[]): { resultsDir?: string; resultFiles?: (string | null)[] } {
  if (!files?.directory || paths.length === 0) return {};
  return { resultsDir: files.directory, resultFiles: paths };
}

function printTail(r: RunResult, io: Io): void {
  if (r.value !== undefined) io.stdout(`${r.value}\n`);
  if (r.error) io.stderr(r.error.traceback.endsWith("\n") ? r.error.traceback : `${r.error.traceback}\n`);
  if (r.limitHit) io.stderr(`agentbox: limit hit: limits.${r.limitHit}\n`);
}

/** `agentbox serve`: run the HTTP API until SIGTERM/SIGINT, then kill every sandbox and exit 0. */
async function serveCommand(argv: string[], io: Io): Promise<number> {
  const stop = stopSignal();
  let server: RunningServer;
  try {
    const { values: v } = parseArgs({
      args: argv,
      strict: true,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        keys: { type: "string" },
        "max-sandboxes": { type: "string" },
        "max-heavy": { type: "string" },
        "queue-timeout": { type: "string" },
        "snapshot-ttl": { type: "string" },
        "state-dir": { type: "string" },
        "on-shutdown": { type: "string" },
        "max-starts": { type: "string" },
        pool: { type: "string" },
        "pool-min": { type: "string" },
        "pool-max": { type: "string" },
        "pool-budget": { type: "string" },
        "pool-idle": { type: "string" },
        "mount-root": { type: "string", multiple: true },
        "allow-net": { type: "string", multiple: true },
        cluster: { type: "string" },
        "node-id": { type: "string" },
        advertise: { type: "string" },
        "lease-ttl": { type: "string" },
        "gone-retention": { type: "string" },
        "cluster-prefix": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (v.help) {
      io.stdout(`${USAGE}\n`);
      return EXIT.ok;
    }
    const { loadKeys, parseEndpoints, startServer } = await import("../server/index.js");
    const keys = loadKeys(v.keys);
    const clusterSpec = v.cluster ?? process.env.AGENTBOX_CLUSTER;
    if (clusterSpec === undefined && (v["node-id"] ?? v.advertise ?? v["lease-ttl"] ?? v["gone-retention"] ?? v["cluster-prefix"]) !== undefined) {
      throw new Error("--node-id, --advertise, --lease-ttl, --gone-retention and --cluster-prefix go with --cluster");
    }
    if (v.advertise !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(v.advertise)) throw new Error(`--advertise: ${JSON.stringify(v.advertise)} is not an http(s)://HOST:PORT URL`);
    if (v["cluster-prefix"] !== undefined && !/^\/[A-Za-z0-9_./-]{0,126}\/$/.test(v["cluster-prefix"])) throw new Error("--cluster-prefix: a key prefix like /agentbox/ (starts and ends with /)");
    const onShutdown = v["on-shutdown"];
    if (onShutdown !== undefined && onShutdown !== "pause" && onShutdown !== "kill") throw new Error(`--on-shutdown: must be "pause" or "kill", got ${JSON.stringify(onShutdown)}`);
    server = await startServer({
      host: v.host ?? D.host,
      port: v.port !== undefined ? parseInteger(v.port, "port") : D.port,
      keys,
      ...(v["max-sandboxes"] !== undefined ? { maxSandboxes: parseInteger(v["max-sandboxes"], "max-sandboxes") } : {}),
      ...(v["max-heavy"] !== undefined ? { maxHeavySandboxes: parseInteger(v["max-heavy"], "max-heavy") } : {}),
      ...(v["queue-timeout"] !== undefined ? { queueTimeoutMs: parseDuration(v["queue-timeout"], "queue-timeout") } : {}),
      ...(v["snapshot-ttl"] !== undefined ? { snapshotTtlMs: parseDuration(v["snapshot-ttl"], "snapshot-ttl") } : {}),
      ...(v["state-dir"] !== undefined ? { stateDir: v["state-dir"] } : {}),
      ...(onShutdown !== undefined ? { onShutdown } : {}),
      ...(v["max-starts"] !== undefined ? { maxConcurrentStarts: Math.max(1, parseInteger(v["max-starts"], "max-starts")) } : {}),
      ...(v.pool !== undefined ? { poolSize: parseInteger(v.pool, "pool") } : {}),
      ...(v["pool-min"] !== undefined ? { poolMin: parseInteger(v["pool-min"], "pool-min") } : {}),
      ...(v["pool-max"] !== undefined ? { poolMax: parseInteger(v["pool-max"], "pool-max") } : {}),
      ...(v["pool-budget"] !== undefined ? { poolMemoryBudgetMb: parseInteger(v["pool-budget"], "pool-budget") } : {}),
      ...(v["pool-idle"] !== undefined ? { poolIdleShrinkMs: parseDuration(v["pool-idle"], "pool-idle") } : {}),
      mountRoots: v["mount-root"] ?? [],
      netAllow: v["allow-net"] ?? [],
      ...(clusterSpec !== undefined
        ? {
            cluster: {
              endpoints: parseEndpoints(clusterSpec),
              ...(v["node-id"] !== undefined ? { nodeId: v["node-id"] } : {}),
              ...(v.advertise !== undefined ? { advertiseUrl: v.advertise.replace(/\/$/, "") } : {}),
              ...(v["lease-ttl"] !== undefined ? { leaseTtlMs: parseDuration(v["lease-ttl"], "lease-ttl") } : {}),
              ...(v["gone-retention"] !== undefined ? { goneRetentionMs: parseDuration(v["gone-retention"], "gone-retention") } : {}),
              ...(v["cluster-prefix"] !== undefined ? { prefix: v["cluster-prefix"] } : {}),
            },
          }
        : {}),
      log: (line) => io.stderr(`agentbox serve: ${line}\n`),
    });
    io.stdout(`agentbox: listening on ${server.url} (${keys.open ? "no API keys: loopback only, one anonymous user" : `${keys.size} API keys`})\n`);
    // E2B's SDKs, unchanged, reach the same sandboxes with these (and an agentbox key as E2B_API_KEY).
    io.stdout(`agentbox: E2B SDKs: E2B_API_URL=${server.url}/e2b E2B_SANDBOX_URL=${server.url}/e2b/sandbox\n`);
  } catch (e) {
    io.stderr(`agentbox serve: ${(e as Error).message}\n`);
    return EXIT.usage;
  }
  const why = await stopped(stop);
  io.stderr(`agentbox serve: ${why === "parent exited" ? "the process that started it exited" : why}: shutting down, ${server.onShutdown === "pause" ? "pausing every sandbox into the state directory" : "killing every sandbox"}\n`);
  await server.close();
  return EXIT.ok;
}

/** `agentbox mcp`: MCP over stdio; the run limit options set every session sandbox's options. */
async function mcpCommand(argv: string[], io: Io): Promise<number> {
  let sandbox: NonNullable<McpSessionOptions["sandbox"]>;
  const { parseMcpSandboxOptions, runStdioMcpServer } = await import("../mcp/index.js");
  try {
    const read = readFlags(argv, MCP_FLAGS);
    const { values, positionals } = read;
    if (values.help) {
      io.stderr(`${USAGE}\n`); // stdout is the MCP channel
      return EXIT.ok;
    }
    if (positionals.length > 0) throw new UsageError("mcp takes no positional arguments (see mcp options)");
    // Parsed here, once, by the library's schema: a bad value exits 64 now, not on every tool call.
    try {
      sandbox = parseMcpSandboxOptions(flagOptions(read, MCP_FLAGS));
    } catch (e) {
      throw e instanceof InvalidOptionsError ? flagError(e, MCP_FLAGS) : e;
    }
  } catch (e) {
    io.stderr(`agentbox mcp: ${(e as Error).message}\n`);
    return EXIT.usage;
  }
  await runStdioMcpServer({ sandbox, version: "0.1.0" }, { signal: stopSignal() });
  return EXIT.ok;
}
