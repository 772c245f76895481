// agentbox/mcp: a Model Context Protocol server exposing run and file tools on session sandboxes.
// One sandbox per language per MCP session, started on first use and killed when the session
// ends; every tool goes through the public Sandbox API. `agentbox mcp` serves it over stdio.
// With `tier: "heavy"` the Python session sandbox is a heavy-tier one (a Debian userland) and a
// run_command tool runs shell commands in it; JavaScript stays on the nano tier.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { CallToolResult, JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { AgentboxError, OutputLimitError, Sandbox, TimeoutError, type CommandOptions, type CommandResult, type RunResult, type SandboxOptions } from "../index.js";

/** Languages with a run tool; each gets its own session sandbox. */
const LANGUAGES = ["python", "javascript"] as const;
type Language = (typeof LANGUAGES)[number];

export interface McpSessionOptions {
  /**
   * Options of every session sandbox (limits, seed, env, mounts); `language` is set per tool.
   * `tier: "heavy"` makes the Python sandbox heavy-tier and adds the run_command tool.
   */
  sandbox?: Omit<SandboxOptions, "language">;
  version?: string;
}

export interface AgentboxMcp {
  server: McpServer;
  /** Kill the session's sandboxes. Idempotent. */
  close(): Promise<void>;
}

export function createMcpServer(opts: McpSessionOptions = {}): AgentboxMcp {
  const server = new McpServer({ name: "agentbox", version: opts.version ?? "0.0.0" });
  const boxes = new Map<Language, Promise<Sandbox>>();
  let closed = false;
  const heavy = opts.sandbox?.tier === "heavy";
  /** JavaScript has no heavy-tier REPL: its sandbox stays nano (without the heavy-only options). */
  const optionsFor = (lang: Language): SandboxOptions => {
    if (lang === "python" || !opts.sandbox) return { ...opts.sandbox, language: lang };
    const { backend: _b, packages: _p, ...rest } = opts.sandbox;
    return { ...rest, tier: "nano", language: lang };
  };

  /** The session's sandbox for `lang`, started on first use; a closed one is replaced (with a note). */
  async function sandboxFor(lang: Language): Promise<{ sb: Sandbox; note?: string }> {
    if (closed) throw new Error("the MCP session is closing");
    let note: string | undefined;
    const existing = boxes.get(lang);
    if (existing) {
      const sb = await existing;
      if (!sb.closed) return { sb };
      note = `the previous ${lang} sandbox was closed (a limit killed it); this is a fresh one, earlier state is gone`;
      boxes.delete(lang);
    }
    const p = Sandbox.create(optionsFor(lang));
    boxes.set(lang, p);
    p.catch(() => boxes.delete(lang)); // a failed start is not cached: the next call tries again
    return { sb: await p, ...(note ? { note } : {}) };
  }

  const target = z
    .enum(LANGUAGES)
    .default("python")
    .describe(heavy ? "which session sandbox: each language has its own file system (python is the Linux sandbox run_command uses)" : "which session sandbox: each language has its own file system");
  const guestPath = z.string().min(1).describe("absolute path inside the sandbox without `..` segments, e.g. /data/in.csv");

  for (const lang of LANGUAGES) {
    const title = lang === "python" ? "Python" : "JavaScript";
    server.registerTool(
      `run_${lang}`,
      {
        title: `Run ${title}`,
        description:
          `Run ${title} code in a sandbox that lives for this session (REPL semantics: variables, imports and files persist between calls). ` +
          (heavy && lang === "python" ? "It runs CPython in a Debian userland, the same sandbox (and files) as run_command. " : "") +
          "No network, no host files; memory, time and output are limited. The value of a trailing expression is returned.",
        inputSchema: { code: z.string().describe(`${title} source to run`), timeoutMs: z.int().min(1).max(3_600_000).optional().describe("time limit of this run in ms") },
      },
      async ({ code, timeoutMs }) =>
        guard(async () => {
          const { sb, note } = await sandboxFor(lang);
          const r = await sb.runCode(code, timeoutMs !== undefined ? { timeoutMs } : {});
          return resultToTool(r, note);
        }),
    );
  }

  if (heavy) {
    server.registerTool(
      "run_command",
      {
        title: "Run shell command",
        description:
          "Run a shell command (bash -c) in a Linux sandbox that lives for this session: Debian userland with python3 and coreutils, files persist between calls " +
          "and are shared with run_python and the file tools; the working directory is /home/user. No network, no host files; memory, time and output are limited. " +
          "Returns stdout, stderr and the exit code.",
        inputSchema: {
          command: z.string().min(1).describe("shell command line, run with /bin/bash -c"),
          timeoutMs: z.int().min(1).max(3_600_000).optional().describe("kill the command after this many ms"),
          cwd: z.string().optional().describe("absolute working directory (default /home/user)"),
        },
      },
      async ({ command, timeoutMs, cwd }) =>
        guard(async () => {
          const { sb, note } = await sandboxFor("python");
          let stdout = "";
          let stderr = "";
          const t0 = performance.now();
          const o: CommandOptions = { onStdout: (s) => void (stdout += s), onStderr: (s) => void (stderr += s) };
          if (timeoutMs !== undefined) o.timeoutMs = timeoutMs;
          if (cwd !== undefined) o.cwd = cwd;
          try {
            return commandToTool(await sb.commands.run(command, o), note);
          } catch (e) {
            // A limit that killed only the command (the sandbox lives on): show what it wrote first.
            if ((e instanceof TimeoutError || e instanceof OutputLimitError) && !sb.closed) {
              return commandToTool({ exitCode: 137, stdout, stderr, signal: "SIGKILL", durationMs: performance.now() - t0 }, note, e.limit);
            }
            throw e;
          }
        }),
    );
  }

  server.registerTool(
    "write_file",
    {
      title: "Write file",
      description: "Write a file into a session sandbox (parent directories are created).",
      inputSchema: { path: guestPath, content: z.string(), encoding: z.enum(["utf8", "base64"]).default("utf8"), sandbox: target },
    },
    async ({ path, content, encoding, sandbox }) =>
      guard(async () => {
        const { sb } = await sandboxFor(sandbox);
        const data = encoding === "base64" ? new Uint8Array(Buffer.from(content, "base64")) : content;
        await sb.files.write(path, data);
        return text(`wrote ${typeof data === "string" ? Buffer.byteLength(data) : data.byteLength} bytes to ${path}`);
      }),
  );

  server.registerTool(
    "read_file",
    {
      title: "Read file",
      description: "Read a file from a session sandbox, as UTF-8 text or base64.",
      inputSchema: { path: guestPath, encoding: z.enum(["utf8", "base64"]).default("utf8"), sandbox: target },
    },
    async ({ path, encoding, sandbox }) =>
      guard(async () => {
        const { sb } = await sandboxFor(sandbox);
        const bytes = await sb.files.read(path, { format: "bytes" });
        return text(encoding === "base64" ? Buffer.from(bytes).toString("base64") : new TextDecoder().decode(bytes));
      }),
  );

  server.registerTool(
    "list_files",
    {
      title: "List files",
      description: "List a directory of a session sandbox (name, type, size), sorted by name.",
      inputSchema: { path: guestPath.default("/"), sandbox: target },
    },
    async ({ path, sandbox }) =>
      guard(async () => {
        const { sb } = await sandboxFor(sandbox);
        const entries = await sb.files.list(path);
        const lines = entries.map((e) => `${e.type === "dir" ? "d" : e.type === "symlink" ? "l" : "-"} ${String(e.size).padStart(10)} ${e.name}`);
        return { content: [{ type: "text", text: lines.length ? lines.join("\n") : "(empty)" }], structuredContent: { entries } };
      }),
  );

  const close = async () => {
    closed = true;
    const all = [...boxes.values()];
    boxes.clear();
    await Promise.allSettled(all.map(async (p) => (await p).kill()));
  };
  const onclose = server.server.onclose;
  server.server.onclose = () => {
    onclose?.();
    void close();
  };
  return { server, close };
}

/** Serve over stdin/stdout until the client goes away (stdin ends) or a signal; then kill the sandboxes. */
export async function runStdioMcpServer(opts: McpSessionOptions = {}): Promise<void> {
  await Sandbox.configurePool({ size: 0 }); // one session, at most one sandbox per language: no pool to keep warm
  const mcp = createMcpServer(opts);
  const transport = new StdioServerTransport();
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void mcp
      .close()
      .then(() => mcp.server.close())
      .finally(() => {
        process.stdin.destroy(); // an open stdin would keep the process alive after a signal
        done();
      });
  };
  // Requests not yet answered: a client that writes its requests and hangs up still gets the answers.
  let unanswered = 0;
  let hungUp = false;
  const maybeStop = () => {
    if (hungUp && unanswered === 0) stop();
  };
  const hangUp = () => {
    hungUp = true;
    maybeStop();
  };
  await mcp.server.connect(transport);
  const onmessage = transport.onmessage;
  transport.onmessage = (m: JSONRPCMessage) => {
    if ("method" in m && "id" in m) unanswered++;
    onmessage?.(m);
  };
  const send = transport.send.bind(transport);
  transport.send = async (m: JSONRPCMessage) => {
    await send(m);
    if (!("method" in m) && "id" in m) {
      unanswered--;
      maybeStop();
    }
  };
  const onclose = transport.onclose;
  transport.onclose = () => {
    onclose?.();
    hangUp();
  };
  process.stdin.once("end", hangUp);
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  await finished;
}

function text(s: string): CallToolResult {
  return { content: [{ type: "text", text: s }] };
}

/** Host errors (no such tier, bad path, closed sandbox, limit kill) become tool errors the model can read. */
async function guard(fn: () => Promise<CallToolResult>): Promise<CallToolResult> {
  try {
    return await fn();
  } catch (e) {
    const err = e as Error;
    const code = e instanceof AgentboxError ? ` [${e.code}]` : "";
    return { isError: true, content: [{ type: "text", text: `${err.name}${code}: ${err.message}` }] };
  }
}

function trimNl(s: string): string {
  return s.endsWith("\n") ? s.slice(0, -1) : s;
}

function commandToTool(r: CommandResult, note?: string, limitHit?: string): CallToolResult {
  const parts: string[] = [];
  if (note) parts.push(`note: ${note}`);
  if (r.stdout) parts.push(trimNl(r.stdout));
  if (r.stderr) parts.push(`[stderr]\n${trimNl(r.stderr)}`);
  if (limitHit) parts.push(`[limit hit] limits.${limitHit}: the command was killed`);
  parts.push(`[exit code] ${r.exitCode}${r.signal ? ` (${r.signal})` : ""}`);
  return { content: [{ type: "text", text: parts.join("\n") }], structuredContent: { ...r, ...(limitHit ? { limitHit } : {}) }, isError: r.exitCode !== 0 || limitHit !== undefined };
}

function resultToTool(r: RunResult, note?: string): CallToolResult {
  const parts: string[] = [];
  if (note) parts.push(`note: ${note}`);
  if (r.stdout) parts.push(r.stdout.endsWith("\n") ? r.stdout.slice(0, -1) : r.stdout);
  if (r.stderr) parts.push(`[stderr]\n${r.stderr.endsWith("\n") ? r.stderr.slice(0, -1) : r.stderr}`);
  if (r.value !== undefined) parts.push(`[value] ${r.value}`);
  if (r.error) parts.push(`[error]\n${r.error.traceback.trimEnd()}`);
  if (r.limitHit) parts.push(`[limit hit] limits.${r.limitHit}`);
  if (parts.length === 0) parts.push("(no output)");
  return {
    content: [{ type: "text", text: parts.join("\n") }],
    structuredContent: { ...r },
    isError: r.exitCode !== 0 || r.limitHit !== undefined,
  };
}
