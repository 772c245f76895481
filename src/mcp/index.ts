// agentbox/mcp: a Model Context Protocol server exposing run and file tools on session sandboxes.
// One sandbox per language per MCP session, started on first use and killed when the session
// ends; every tool goes through the public Sandbox API. `agentbox mcp` serves it over stdio.
// With `tier: "heavy"` the Python session sandbox is a heavy-tier one (a Debian userland) and a
// run_command tool runs shell commands in it; JavaScript stays on the nano tier. With `tier: "auto"`
// the Python sandbox starts on the nano tier and moves to the heavy tier when code (or a
// run_command call) needs it.
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type { CallToolResult, JSONRPCMessage, ServerNotification, ServerRequest } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { AgentboxError, resolveSandboxOptions, Sandbox, sandboxOptionsForTier, type CommandOptions, type CommandResult, type DisplayResult, type Language as AnyLanguage, type ResolvedOptions, type RunResult, type SandboxOptions } from "../index.js";

/** Languages with a run tool; each gets its own session sandbox (checked against the library's list). */
const LANGUAGES = ["python", "javascript"] as const satisfies readonly AnyLanguage[];
type WithoutLanguage<T> = T extends unknown ? Omit<T, "language"> : never;
type SessionOptions = WithoutLanguage<SandboxOptions>;
type ParsedSessionOptions = WithoutLanguage<ResolvedOptions>;
type Language = (typeof LANGUAGES)[number];

export interface McpSessionOptions {
  /**
   * Options of every session sandbox (limits, seed, env, mounts); `language` is set per tool.
   * `tier: "heavy"` makes the Python sandbox heavy-tier and adds the run_command tool; `tier:
   * "auto"` makes it start on the nano tier and move to the heavy tier when needed (run_command too).
   */
  sandbox?: SessionOptions;
  version?: string;
}

export interface AgentboxMcp {
  server: McpServer;
  /** Kill the session's sandboxes. Idempotent. */
  close(): Promise<void>;
}

/**
 * The session sandboxes' options, parsed by the library's own schema. `agentbox mcp` calls this
 * at start, so a bad --memory exits 64 there instead of every tool call failing later.
 * Throws InvalidOptionsError naming the field.
 */
export function parseMcpSandboxOptions(sandbox: McpSessionOptions["sandbox"] = {}): ParsedSessionOptions {
  const { language: _l, ...parsed }: ResolvedOptions = resolveSandboxOptions({ ...sandbox, language: "python" }).options;
  return parsed as ParsedSessionOptions;
}

type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** At most one progress notification per this many ms: output is batched in between. */
const PROGRESS_INTERVAL_MS = 200;

export function createMcpServer(opts: McpSessionOptions = {}): AgentboxMcp {
  const server = new McpServer({ name: "agentbox", version: opts.version ?? "0.0.0" });
  const boxes = new Map<Language, Promise<Sandbox>>();
  let closed = false;
  const base = parseMcpSandboxOptions(opts.sandbox);
  const heavy = base.tier === "heavy";
  /** The Python sandbox is (or may become) a Linux one: run_command exists, only /home/user and /tmp take writes. */
  const linux = heavy || base.tier === "auto";
  /** What the tools' descriptions say of the network: the operator's grant (--allow-net), or none. */
  const grant = "network" in base ? base.network : undefined;
  const networkNote = grant
    ? `Network: HTTP(S) only to ${grant.allow.join(", ")}${heavy ? " (through a proxy: curl, pip, git and requests work)" : ""}; other hosts are refused.`
    : "No network.";
  /** The session's run limit is also the most a call may ask for: a caller cannot lift the operator's --timeout. */
  const maxTimeoutMs = base.limits.timeoutMs;
  const timeoutMs = (what: string) =>
    z.int().min(1).max(maxTimeoutMs).optional().describe(`${what}, in ms (at most ${maxTimeoutMs}, the session's limit, which is also the default)`);
  /** JavaScript has no heavy-tier REPL: its sandbox stays nano (without the heavy-only options). */
  const optionsFor = (lang: Language): SandboxOptions => {
    if (lang === "python") return { ...base, language: lang } as SandboxOptions;
    return { ...sandboxOptionsForTier(base, "nano"), language: lang } as SandboxOptions;
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
    .describe(linux ? "which session sandbox: each language has its own file system (python is the Linux sandbox run_command uses)" : "which session sandbox: each language has its own file system");
  // The heavy tier's root is read-only: only /home/user and /tmp take writes (tier auto keeps that rule from the start).
  const guestPath = z.string().min(1).describe(`absolute path inside the sandbox without \`..\` segments, e.g. ${linux ? "/home/user/in.csv" : "/data/in.csv"}`);

  for (const lang of LANGUAGES) {
    const title = lang === "python" ? "Python" : "JavaScript";
    server.registerTool(
      `run_${lang}`,
      {
        title: `Run ${title}`,
        description:
          `Run ${title} code in a sandbox that lives for this session (REPL semantics: variables, imports and files persist between calls). ` +
          (heavy && lang === "python" ? "It runs CPython in a Debian userland, the same sandbox (and files) as run_command. " : "") +
          (base.tier === "auto" && lang === "python"
            ? "It starts in CPython on WebAssembly and moves, with its variables and files, to a Debian userland (the sandbox run_command uses) when code needs it (subprocess, a module the WebAssembly Python lacks). "
            : "") +
          `${networkNote} No host files; memory, time and output are limited. The value of a trailing expression is returned.`,
        inputSchema: { code: z.string().describe(`${title} source to run`), timeoutMs: timeoutMs("time limit of this run") },
      },
      async ({ code, timeoutMs }, extra) =>
        guard(async () => {
          const { sb, note } = await sandboxFor(lang);
          const progress = outputProgress(extra);
          const wasNano = sb.info.tier === "auto" && sb.info.current === "nano";
          try {
            const r = await sb.runCode(code, { signal: extra.signal, ...progress.sink, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
            const moved = wasNano && r.tier === "heavy" ? "this code needed the heavy tier: the sandbox moved to a Debian userland (earlier cells were replayed there) and stays there" : undefined;
            return resultToTool(r, [note, moved].filter(Boolean).join("; ") || undefined);
          } finally {
            await progress.done();
          }
        }),
    );
  }

  if (linux) {
    server.registerTool(
      "run_command",
      {
        title: "Run shell command",
        description:
          "Run a shell command (bash -c) in a Linux sandbox that lives for this session: Debian userland with python3 and coreutils, files persist between calls " +
          "and are shared with run_python and the file tools; the working directory is /home/user. " +
          `${networkNote} No host files; memory, time and output are limited. ` +
          "Returns stdout, stderr and the exit code.",
        inputSchema: {
          command: z.string().min(1).describe("shell command line, run with /bin/bash -c"),
          timeoutMs: timeoutMs("kill the command after this long"),
          cwd: z.string().optional().describe("absolute working directory (default /home/user)"),
        },
      },
      async ({ command, timeoutMs, cwd }, extra) => {
        const progress = outputProgress(extra);
        return guard(async () => {
          const { sb, note } = await sandboxFor("python");
          const o: CommandOptions = { signal: extra.signal, ...progress.sink };
          if (timeoutMs !== undefined) o.timeoutMs = timeoutMs;
          if (cwd !== undefined) o.cwd = cwd;
          return commandToTool(await sb.commands.run(command, o), note);
        }).finally(() => progress.done());
      },
    );
  }

  server.registerTool(
    "write_file",
    {
      title: "Write file",
      description: `Write a file into a session sandbox (parent directories are created).${linux ? " In the python (Linux) sandbox only /home/user and /tmp are writable." : ""}`,
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

/**
 * Serve one MCP session over stdin/stdout until the client closes stdin (answers to requests
 * already sent still go out), SIGTERM/SIGINT, or `signal` fires; then kill its sandboxes.
 */
export async function runStdioMcpServer(opts: McpSessionOptions = {}, run: { signal?: AbortSignal } = {}): Promise<void> {
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
  if (run.signal?.aborted) stop();
  run.signal?.addEventListener("abort", stop, { once: true });
  await finished;
}

/**
 * Output as progress notifications while a tool runs, when the client asked for progress (sent a
 * progress token): chunks are batched and sent at most every PROGRESS_INTERVAL_MS, stderr lines
 * marked "[stderr] ". `progress` counts the characters sent so far, so it always grows. A client
 * that resets its request timeout on progress (the SDK's resetTimeoutOnProgress) can thus wait
 * out a long run that keeps printing. `done()` sends what is left, before the tool's answer.
 */
function outputProgress(extra: ToolExtra): { sink: { onStdout?: (s: string) => void; onStderr?: (s: string) => void }; done: () => Promise<void> } {
  const token = extra._meta?.progressToken;
  if (token === undefined) return { sink: {}, done: async () => undefined };
  let pending = "";
  let total = 0;
  let timer: NodeJS.Timeout | undefined;
  let chain: Promise<unknown> = Promise.resolve();
  const flush = () => {
    clearTimeout(timer);
    timer = undefined;
    if (!pending) return;
    const message = pending;
    pending = "";
    total += message.length;
    const params = { progressToken: token, progress: total, message };
    chain = chain.then(() => extra.sendNotification({ method: "notifications/progress", params })).catch(() => undefined);
  };
  const push = (s: string) => {
    if (!s) return;
    pending += s;
    timer ??= setTimeout(flush, PROGRESS_INTERVAL_MS);
  };
  const marked = (s: string) => s.replace(/^(?=.)/gm, "[stderr] ");
  return {
    sink: { onStdout: push, onStderr: (s) => push(marked(s)) },
    done: async () => {
      flush();
      await chain;
    },
  };
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
    // What the run or command wrote before it was stopped is part of the answer.
    const r = e instanceof AgentboxError ? e.result : undefined;
    const parts: string[] = [];
    if (r?.stdout) parts.push(trimNl(r.stdout));
    if (r?.stderr) parts.push(`[stderr]\n${trimNl(r.stderr)}`);
    parts.push(`${err.name}${code}: ${err.message}`);
    return { isError: true, content: [{ type: "text", text: parts.join("\n") }], ...(r ? { structuredContent: { ...r } } : {}) };
  }
}

function trimNl(s: string): string {
  return s.endsWith("\n") ? s.slice(0, -1) : s;
}

function commandToTool(r: CommandResult, note?: string): CallToolResult {
  const { limitHit } = r;
  const parts: string[] = [];
  if (note) parts.push(`note: ${note}`);
  if (r.stdout) parts.push(trimNl(r.stdout));
  if (r.stderr) parts.push(`[stderr]\n${trimNl(r.stderr)}`);
  if (limitHit) parts.push(`[limit hit] limits.${limitHit}: the command was killed`);
  parts.push(`[exit code] ${r.exitCode}${r.signal ? ` (${r.signal})` : ""}`);
  return { content: [{ type: "text", text: parts.join("\n") }], structuredContent: { ...r }, isError: r.exitCode !== 0 || limitHit !== undefined };
}

/**
 * One rich result as one content block: an image block for PNG/JPEG (what MCP clients render),
 * else a text block with the richest text form, labelled with its MIME type.
 */
function displayToContent(d: DisplayResult): CallToolResult["content"][number] {
  for (const mimeType of ["image/png", "image/jpeg"] as const) {
    const data = d.data[mimeType];
    if (data !== undefined) return { type: "image", data, mimeType };
  }
  const label = d.main ? "[result" : "[display";
  for (const mime of ["text/html", "text/markdown", "image/svg+xml", "application/json"] as const) {
    const t = d.data[mime];
    if (t !== undefined) return { type: "text", text: `${label} ${mime}]\n${t}` };
  }
  if (d.data["text/plain"] !== undefined) return { type: "text", text: `${label}]\n${d.data["text/plain"]}` };
  return { type: "text", text: `${label} ${Object.keys(d.data).join(", ")}] (not shown here; see structuredContent.results)` };
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
    content: [{ type: "text", text: parts.join("\n") }, ...(r.results ?? []).map(displayToContent)],
    structuredContent: { ...r },
    isError: r.exitCode !== 0 || r.limitHit !== undefined,
  };
}
