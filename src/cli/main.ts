// The `agentbox` command line: a thin layer over the public API (parse, call, print, exit code).
//   agentbox run FILE | -c CODE [--language python|javascript|typescript] [--memory MB] [--timeout 5s] [--seed N] [--mount host:guest[:rw]] [--json]
//   agentbox serve [--host H] [--port P] [--keys FILE] ...   (HTTP API, src/server/)
//   agentbox mcp [--memory MB] [--timeout 5s] ...             (MCP over stdio, src/mcp/)
// Exit codes: 0 ok, 1 the guest raised, 2 a limit was hit, 64 bad usage, 70 internal failure.
// Each command is a function (argv after the command name, io) → exit code, listed in COMMANDS.
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { AgentboxError, HEAVY_BACKENDS, InvalidOptionsError, LANGUAGES, LimitError, Sandbox, TIERS, type Language, type Mount, type RunResult, type SandboxOptions } from "../index.js";
import { parseMcpSandboxOptions, runStdioMcpServer, type McpSessionOptions } from "../mcp/index.js";
import { loadKeys, startServer, type RunningServer } from "../server/index.js";
import { execCommand, imageCommand } from "./heavy.js";
import { stopped, stopSignal } from "./lifecycle.js";
import { errorJson } from "./output.js";

const USAGE = `usage: agentbox <command> [options]

commands:
  run (FILE | -c CODE)   run code in a fresh sandbox and print its output
  serve                  serve sandboxes over HTTP (see serve options)
  mcp                    MCP server over stdio with run/file tools (takes the run limit options;
                         --tier heavy: Python in a Debian userland plus a run_command tool)
  exec --tier heavy -- CMD...  run a command in a fresh heavy-tier sandbox (agentbox exec -h)
  image build|list|rm    the heavy tier's Debian images (agentbox image -h)

run options:
  -c, --code CODE        code to run instead of a file
  --language LANG        python, javascript or typescript (default: from the file's extension,
                         .py / .js .mjs .cjs / .ts .mts .cts; python for -c)
  --tier TIER            nano (WebAssembly, default) or heavy (Debian userland in gVisor;
                         run \`agentbox image build\` once first)
  --backend B            heavy tier: auto (the microVM where KVM boots it, else gVisor), gvisor or
                         microvm (QEMU; software emulation where KVM is unusable: slow)
  --memory MB            memory limit in MiB (default 256)
  --timeout DURATION     time limit: 500ms, 5s, 2m or plain milliseconds (default 30s)
  --seed N               seed for randomness and the virtual clock (reproducible runs)
  --mount HOST:GUEST[:rw]  make a host directory visible (read-only unless :rw); repeatable
  --env NAME=VALUE       environment variable for the guest; repeatable
  --allow-net HOST       JavaScript/TypeScript: give the guest fetch() to HOST ([scheme://]host[:port],
                         *.domain for subdomains); repeatable. No network without it.
  --json                 print one JSON object with the whole result
  -h, --help             this help

serve options:
  --host HOST            address to listen on (default 127.0.0.1; non-loopback needs API keys)
  --port PORT            port (default 8787; 0 picks a free one)
  --keys FILE            API keys, JSON {"keys":[{"name","key"|"sha256","maxSandboxes","maxMemoryMb","maxRunMs","maxCpus","maxDiskMb"}]}
                         (else $AGENTBOX_API_KEYS_FILE, or $AGENTBOX_API_KEYS: the same JSON or key1,key2)
  --max-sandboxes N      live sandboxes across all keys and tiers (default 16); creates past it queue
  --max-heavy N          live heavy-tier sandboxes (default 8; each also counts in --max-sandboxes)
  --queue-timeout DURATION  how long a create waits for a slot before 429 (default 30s)
  --max-starts N         sandboxes starting at once (default: number of CPUs); others wait their turn
  --pool N               ready workers kept warm (default 2)
  --mount-root DIR       clients may mount (read-only) directories under DIR; repeatable
  --allow-net HOST       clients may grant JS sandboxes fetch() to HOST ([scheme://]host[:port]); repeatable

exit codes: 0 ok, 1 the code raised, 2 a limit was hit, 64 bad usage, 70 internal error`;

export const EXIT = { ok: 0, guestError: 1, limit: 2, usage: 64, internal: 70 } as const;

class UsageError extends Error {}

export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new UsageError(`--timeout: cannot read ${JSON.stringify(s)}; use e.g. 500ms, 5s, 2m`);
  const n = Number(m[1]);
  return Math.round(m[2] === "s" ? n * 1000 : m[2] === "m" ? n * 60_000 : n);
}

export function parseMount(s: string): Mount {
  const parts = s.split(":");
  const mode = parts.length === 3 ? parts.pop() : undefined;
  if (parts.length !== 2 || !parts[0] || !parts[1] || (mode !== undefined && mode !== "rw" && mode !== "ro")) {
    throw new UsageError(`--mount: expected HOST:GUEST or HOST:GUEST:rw, got ${JSON.stringify(s)}`);
  }
  return { hostPath: path.resolve(parts[0]), guestPath: parts[1], readOnly: mode !== "rw" };
}

function parseInteger(name: string, s: string): number {
  if (!/^\d+$/.test(s)) throw new UsageError(`--${name}: expected a non-negative integer, got ${JSON.stringify(s)}`);
  return Number(s);
}

const EXTENSIONS: Record<string, Language> = {
  ".py": "python",
  ".js": "javascript",
  ".mjs": "javascript",
  ".cjs": "javascript",
  ".ts": "typescript",
  ".mts": "typescript",
  ".cts": "typescript",
};

/** The language to run: --language if given, else from the file's extension, else python. */
export function pickLanguage(flag: string | undefined, file: string | undefined): Language {
  if (flag !== undefined) {
    if (!(LANGUAGES as readonly string[]).includes(flag)) throw new UsageError(`--language: expected one of ${LANGUAGES.join(", ")}, got ${JSON.stringify(flag)}`);
    return flag as Language;
  }
  return (file !== undefined && EXTENSIONS[path.extname(file).toLowerCase()]) || "python";
}

export interface Io {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export type Command = (argv: string[], io: Io) => Promise<number>;

/** Every subcommand. A new surface (serve, mcp, image, exec) adds its entry here. */
const COMMANDS: Record<string, Command> = {
  run: runCommand,
  serve: serveCommand,
  mcp: mcpCommand,
  exec: (argv, io) => execCommand(argv, io, { parseDuration }),
  image: imageCommand,
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
  let args: ReturnType<typeof parse>;
  try {
    args = parse(argv);
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
    const env: Record<string, string> = {};
    for (const kv of args.values.env ?? []) {
      const i = kv.indexOf("=");
      if (i <= 0) throw new UsageError(`--env: expected NAME=VALUE, got ${JSON.stringify(kv)}`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    const limits: { memoryMb?: number; timeoutMs?: number } = {};
    if (args.values.memory !== undefined) limits.memoryMb = parseInteger("memory", args.values.memory);
    if (args.values.timeout !== undefined) limits.timeoutMs = parseDuration(args.values.timeout);
    const seed = args.values.seed !== undefined ? parseInteger("seed", args.values.seed) : undefined;
    const mounts = (args.values.mount ?? []).map(parseMount);
    const language = pickLanguage(args.values.language, rest[0]);

    await Sandbox.configurePool({ size: 0 });
    const tier = args.values.tier ?? "nano";
    if (!(TIERS as readonly string[]).includes(tier)) throw new UsageError(`--tier: expected ${TIERS.join(" or ")}, got ${JSON.stringify(tier)}`);
    const backend = args.values.backend ?? "auto";
    if (backend !== "auto" && !(HEAVY_BACKENDS as readonly string[]).includes(backend)) throw new UsageError(`--backend: expected auto, ${HEAVY_BACKENDS.join(" or ")}, got ${JSON.stringify(backend)}`);
    const allowNet = args.values["allow-net"] ?? [];
    const network = allowNet.length > 0 ? { network: { allow: allowNet } } : {};
    // Checked by the library against the tier's schema: --backend on nano is an error naming it.
    sb = await Sandbox.create({ tier, language, limits, env, mounts, pool: false, ...(args.values.backend !== undefined ? { backend } : {}), ...network, ...(seed !== undefined ? { seed } : {}) } as SandboxOptions);
    const r = await sb.runCode(code, json ? {} : { onStdout: io.stdout, onStderr: io.stderr });
    if (json) io.stdout(`${JSON.stringify(r)}\n`);
    else printTail(r, io);
    return r.limitHit ? EXIT.limit : r.error ? EXIT.guestError : EXIT.ok;
  } catch (e) {
    const code = e instanceof UsageError || e instanceof InvalidOptionsError ? EXIT.usage : e instanceof LimitError ? EXIT.limit : EXIT.internal;
    if (json) {
      const err = e as AgentboxError;
      io.stdout(`${JSON.stringify(errorJson(err, code))}\n`);
    } else {
      io.stderr(`agentbox: ${(e as Error).message}\n`);
      if (code === EXIT.usage) io.stderr(`\n${USAGE}\n`);
    }
    return code;
  } finally {
    await sb?.kill();
  }
}

function printTail(r: RunResult, io: Io): void {
  if (r.value !== undefined) io.stdout(`${r.value}\n`);
  if (r.error) io.stderr(r.error.traceback.endsWith("\n") ? r.error.traceback : `${r.error.traceback}\n`);
  if (r.limitHit) io.stderr(`agentbox: limit hit: limits.${r.limitHit}\n`);
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      code: { type: "string", short: "c" },
      language: { type: "string" },
      tier: { type: "string" },
      backend: { type: "string" },
      memory: { type: "string" },
      timeout: { type: "string" },
      seed: { type: "string" },
      mount: { type: "string", multiple: true },
      env: { type: "string", multiple: true },
      "allow-net": { type: "string", multiple: true },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
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
        "max-starts": { type: "string" },
        pool: { type: "string" },
        "mount-root": { type: "string", multiple: true },
        "allow-net": { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
    });
    if (v.help) {
      io.stdout(`${USAGE}\n`);
      return EXIT.ok;
    }
    const keys = loadKeys(v.keys);
    server = await startServer({
      host: v.host ?? "127.0.0.1",
      port: v.port !== undefined ? parseInteger("port", v.port) : 8787,
      keys,
      ...(v["max-sandboxes"] !== undefined ? { maxSandboxes: parseInteger("max-sandboxes", v["max-sandboxes"]) } : {}),
      ...(v["max-heavy"] !== undefined ? { maxHeavySandboxes: parseInteger("max-heavy", v["max-heavy"]) } : {}),
      ...(v["queue-timeout"] !== undefined ? { queueTimeoutMs: parseDuration(v["queue-timeout"]) } : {}),
      ...(v["max-starts"] !== undefined ? { maxConcurrentStarts: Math.max(1, parseInteger("max-starts", v["max-starts"])) } : {}),
      ...(v.pool !== undefined ? { poolSize: parseInteger("pool", v.pool) } : {}),
      mountRoots: v["mount-root"] ?? [],
      netAllow: v["allow-net"] ?? [],
      log: (line) => io.stderr(`agentbox serve: ${line}\n`),
    });
    io.stdout(`agentbox: listening on ${server.url} (${keys.open ? "no API keys: loopback only, one anonymous user" : `${keys.size} API keys`})\n`);
  } catch (e) {
    io.stderr(`agentbox serve: ${(e as Error).message}\n`);
    return EXIT.usage;
  }
  const why = await stopped(stop);
  io.stderr(`agentbox serve: ${why === "parent exited" ? "the process that started it exited" : why}: shutting down, killing every sandbox\n`);
  await server.close();
  return EXIT.ok;
}

/** `agentbox mcp`: MCP over stdio; the run limit options set every session sandbox's options. */
async function mcpCommand(argv: string[], io: Io): Promise<number> {
  let sandbox: NonNullable<McpSessionOptions["sandbox"]>;
  try {
    const { values: v, positionals } = parse(argv);
    if (v.help) {
      io.stderr(`${USAGE}\n`);
      return EXIT.ok;
    }
    if (positionals.length > 0 || v.code !== undefined || v.json || v.language !== undefined) throw new UsageError("mcp takes only --tier, --memory, --timeout, --seed, --mount, --env");
    const tier = v.tier ?? "nano";
    if (!(TIERS as readonly string[]).includes(tier)) throw new UsageError(`--tier: expected ${TIERS.join(" or ")}, got ${JSON.stringify(tier)}`);
    const env: Record<string, string> = {};
    for (const kv of v.env ?? []) {
      const i = kv.indexOf("=");
      if (i <= 0) throw new UsageError(`--env: expected NAME=VALUE, got ${JSON.stringify(kv)}`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    const limits: { memoryMb?: number; timeoutMs?: number } = {};
    if (v.memory !== undefined) limits.memoryMb = parseInteger("memory", v.memory);
    if (v.timeout !== undefined) limits.timeoutMs = parseDuration(v.timeout);
    // Parsed here, once, by the library's schema: a bad value exits 64 now, not on every tool call.
    sandbox = parseMcpSandboxOptions({ tier, limits, env, mounts: (v.mount ?? []).map(parseMount), ...(v.seed !== undefined ? { seed: parseInteger("seed", v.seed) } : {}) } as McpSessionOptions["sandbox"]);
  } catch (e) {
    io.stderr(`agentbox mcp: ${(e as Error).message}\n`);
    return EXIT.usage;
  }
  await runStdioMcpServer({ sandbox, version: "0.1.0" }, { signal: stopSignal() });
  return EXIT.ok;
}
