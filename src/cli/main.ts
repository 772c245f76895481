// The `agentbox` command line: a thin layer over the public API (parse, call, print, exit code).
//   agentbox run FILE | -c CODE [--memory MB] [--timeout 5s] [--seed N] [--mount host:guest[:rw]] [--json]
// Exit codes: 0 ok, 1 the guest raised, 2 a limit was hit, 64 bad usage, 70 internal failure.
// Each command is a function (argv after the command name, io) → exit code, listed in COMMANDS.
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { AgentboxError, InvalidOptionsError, LimitError, Sandbox, type Mount, type RunResult } from "../index.js";

const USAGE = `usage: agentbox <command> [options]

commands:
  run (FILE | -c CODE)   run code in a fresh sandbox and print its output

run options:
  -c, --code CODE        Python code to run instead of a file
  --memory MB            memory limit in MiB (default 256)
  --timeout DURATION     time limit: 500ms, 5s, 2m or plain milliseconds (default 30s)
  --seed N               seed for randomness and the virtual clock (reproducible runs)
  --mount HOST:GUEST[:rw]  make a host directory visible (read-only unless :rw); repeatable
  --env NAME=VALUE       environment variable for the guest; repeatable
  --json                 print one JSON object with the whole result
  -h, --help             this help

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

export interface Io {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export type Command = (argv: string[], io: Io) => Promise<number>;

/** Every subcommand. A new surface (serve, mcp, image, exec) adds its entry here. */
const COMMANDS: Record<string, Command> = {
  run: runCommand,
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

    await Sandbox.configurePool({ size: 0 });
    sb = await Sandbox.create({ limits, env, mounts, pool: false, ...(seed !== undefined ? { seed } : {}) });
    const r = await sb.runCode(code, json ? {} : { onStdout: io.stdout, onStderr: io.stderr });
    if (json) io.stdout(`${JSON.stringify(r)}\n`);
    else printTail(r, io);
    return r.limitHit ? EXIT.limit : r.error ? EXIT.guestError : EXIT.ok;
  } catch (e) {
    const code = e instanceof UsageError || e instanceof InvalidOptionsError ? EXIT.usage : e instanceof LimitError ? EXIT.limit : EXIT.internal;
    if (json) {
      const err = e as AgentboxError;
      io.stdout(`${JSON.stringify({ error: { name: err.name, code: err.code ?? "USAGE", message: err.message }, ...(e instanceof LimitError ? { limitHit: e.limit } : {}), exitCode: code })}\n`);
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
      memory: { type: "string" },
      timeout: { type: "string" },
      seed: { type: "string" },
      mount: { type: "string", multiple: true },
      env: { type: "string", multiple: true },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}
