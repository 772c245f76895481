// The code interpreter's face (port 49999), as `@e2b/code-interpreter` speaks to it: POST /execute
// answers NDJSON lines as the run goes (stdout/stderr chunks, results as they are displayed, then
// the error if any, number_of_executions, end_of_execution), and /contexts manages code contexts.
//
// Contexts. An agentbox sandbox has one REPL; its state is the "default" context, which always
// exists and is what `language` picks (when the sandbox runs that language). On a Python sandbox
// more contexts can be created: each runs its cells in a namespace dict of its own inside that
// REPL (a small helper compiles the cell, runs it there and gives back its trailing expression,
// which the REPL then shows as the main result), in its own working directory. They share the
// process with the default context: modules, os.environ, files and sys state are common. Restart
// of the default context deletes the REPL's globals (modules stay imported); of another context,
// empties its namespace. JavaScript sandboxes (QuickJS, no process.env) have the default context
// only, and no env_vars.
//
// env_vars on Python: set in os.environ for the run and put back after it (a cell before and one
// after the run), as E2B does. Time: E2B's server has no time limit of its own (the SDK's
// timeoutMs aborts the request, which interrupts the run); here a run is also bounded by the
// key's maxRunMs, reported as an error line named TimeoutError.
//
// Charts: the guest's display machinery (guest/display.py) gives a matplotlib figure, beside its
// PNG, its data as application/vnd.agentbox.chart+json in E2B's chart shape (line, scatter, bar,
// pie, box_and_whisker, superchart); it is `chart` here, passed through as the guest wrote it (the
// SDK keeps `chart` as it comes, and display.py writes E2B's key names: a box_and_whisker element is
// label, min, first_quartile, median, third_quartile, max, outliers).
import { Hono } from "hono";
import { stream } from "hono/streaming";
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { LimitError } from "../../errors.js";
import type { Sandbox } from "../../index.js";
import type { DisplayResult } from "../../protocol/display.js";
import { readJsonRequest } from "../body.js";
import { HttpError, toHttp } from "../http-errors.js";
import type { Entry } from "../registry.js";
import type { E2bOptions, SandboxEnv } from "./index.js";

/** The id of the context that is the sandbox's REPL itself. */
export const DEFAULT_CONTEXT = "default";
/** Most contexts one sandbox may have besides the default one. */
const MAX_CONTEXTS = 32;
const DEFAULT_CWD = "/home/user";

interface CodeContext {
  readonly id: string;
  readonly language: string;
  readonly cwd: string;
  /** Executions so far (Jupyter's execution_count). */
  executions: number;
}

interface InterpreterState {
  contexts: Map<string, CodeContext>;
  /** The Python helpers (__e2b_*) are defined in the REPL. */
  helpers: boolean;
}

const envName = z.string().min(1).max(256).regex(/^[^=\0]+$/, "an environment variable name has no '=' or NUL");
const envVars = z.record(envName, z.string().max(65_536).regex(/^[^\0]*$/, "no NUL")).refine((m) => Object.keys(m).length <= 256, "at most 256 variables");
const executeBody = z
  .object({
    code: z.string(),
    context_id: z.string().min(1).max(128).nullish(),
    language: z.string().max(64).nullish(),
    env_vars: envVars.nullish(),
  })
  .loose();
const createContextBody = z
  .object({
    language: z.string().max(64).nullish(),
    cwd: z.string().min(1).max(4096).regex(/^\/[^\0]*$/, "an absolute path").nullish(),
  })
  .loose();

/** E2B's names: lower case, "js" is javascript, "ts" typescript; none is python. */
export function normalizeLanguage(language: string | null | undefined): string {
  const l = (language ?? "").trim().toLowerCase();
  if (l === "") return "python";
  if (l === "js") return "javascript";
  if (l === "ts") return "typescript";
  return l;
}

/** The language the sandbox's runCode runs. */
function sandboxLanguage(entry: Entry): string {
  return String((entry.sandbox.options as { language?: unknown }).language ?? "python");
}

/** Whether a sandbox running `own` runs code in `wanted` (TypeScript sandboxes also run JavaScript). */
function runs(own: string, wanted: string): boolean {
  return own === wanted || (own === "typescript" && wanted === "javascript");
}

/** An error answer as E2B's server gives it: plain text (the SDK shows the body of a 404). */
class PlainError extends HttpError {
  constructor(status: number, message: string) {
    super(status, status === 404 ? "NOT_FOUND" : "INVALID_OPTIONS", message);
  }
}

function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

/** A Python string literal of `text` (decoded from base64, so any text is safe in it). */
function pyText(text: string): string {
  return `__import__("base64").b64decode("${b64(text)}").decode("utf-8")`;
}

// The helpers non-default contexts and env_vars need, defined once in the REPL's globals. Names
// start with "__e2b" (kept by a restart of the default context).
const PY_HELPERS = `
def __e2b_env_set(b):
    import os, json, base64
    new = json.loads(base64.b64decode(b).decode("utf-8"))
    saved = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    return saved

def __e2b_env_restore(saved):
    import os
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v

__e2b_contexts = {}

def __e2b_run(ctx, cwd, b, env=None):
    import ast, os, base64, linecache
    src = base64.b64decode(b).decode("utf-8")
    ns = __e2b_contexts.setdefault(ctx, {"__name__": "__main__", "__builtins__": __builtins__})
    ns["__e2b_n"] = n = ns.get("__e2b_n", 0) + 1
    name = "<cell-%s-%d>" % (ctx[:8], n)
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    tree = ast.parse(src, name, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    saved = __e2b_env_set(env) if env else None
    back = os.getcwd()
    os.chdir(cwd)
    try:
        exec(compile(tree, name, "exec"), ns)
        if last is not None:
            return eval(compile(last, name, "eval"), ns)
    finally:
        try:
            os.chdir(back)
        except OSError:
            pass
        if saved is not None:
            __e2b_env_restore(saved)
`;

const PY_RESET_DEFAULT = `[globals().pop(k) for k in [k for k in globals() if not k.startswith("__e2b") and k not in ("__name__", "__doc__", "__builtins__", "__loader__", "__spec__", "__package__")]]
None`;

/** One result as an NDJSON `result` line: E2B's keys for the MIME types. */
export function resultLine(r: DisplayResult): Record<string, unknown> {
  const d = r.data;
  const line: Record<string, unknown> = { type: "result" };
  let text = d["text/plain"];
  // E2B's server drops the quotes of a string's repr ('abc' → abc).
  if (text !== undefined && text.length >= 2 && ((text.startsWith("'") && text.endsWith("'")) || (text.startsWith('"') && text.endsWith('"')))) text = text.slice(1, -1);
  if (text !== undefined) line.text = text;
  if (d["text/html"] !== undefined) line.html = d["text/html"];
  if (d["text/markdown"] !== undefined) line.markdown = d["text/markdown"];
  if (d["image/svg+xml"] !== undefined) line.svg = d["image/svg+xml"];
  if (d["image/png"] !== undefined) line.png = d["image/png"];
  if (d["image/jpeg"] !== undefined) line.jpeg = d["image/jpeg"];
  if (d["application/pdf"] !== undefined) line.pdf = d["application/pdf"];
  const json = d["application/json"];
  if (json !== undefined) {
    try {
      line.json = JSON.parse(json) as unknown;
    } catch {
      line.json = json;
    }
  }
  const chart = d["application/vnd.agentbox.chart+json"];
  if (chart !== undefined) {
    try {
      line.chart = JSON.parse(chart) as unknown;
    } catch {
      // not JSON: no chart (the guest's data is checked here, never trusted)
    }
  }
  line.is_main_result = r.main;
  return line;
}

export function interpreterApp(o: E2bOptions): Hono<SandboxEnv> {
  const app = new Hono<SandboxEnv>();
  const { registry } = o;
  const states = new WeakMap<Entry, InterpreterState>();

  app.onError((e, c) => {
    const { status, body } = toHttp(e);
    if (status >= 500 && !(e instanceof HttpError)) o.log(`error: e2b interpreter ${c.req.method} ${c.req.path}: ${e.stack ?? String(e)}`);
    return c.text(body.error.message, status as 400);
  });

  const stateOf = (entry: Entry): InterpreterState => {
    let s = states.get(entry);
    if (!s) {
      s = { contexts: new Map([[DEFAULT_CONTEXT, { id: DEFAULT_CONTEXT, language: sandboxLanguage(entry), cwd: DEFAULT_CWD, executions: 0 }]]), helpers: false };
      states.set(entry, s);
    }
    return s;
  };

  const contextOf = (entry: Entry, id: string): CodeContext => {
    const ctx = stateOf(entry).contexts.get(id);
    if (!ctx) throw new PlainError(404, `Context ${id} not found`);
    return ctx;
  };

  /** A quiet cell of ours (helpers, env, restart): its error is the request's. */
  const internal = async (sb: Sandbox, code: string, what: string): Promise<void> => {
    const r = await sb.runCode(code, { timeoutMs: 30_000 });
    if (r.error) throw new HttpError(500, "INTERNAL", `${what} failed: ${r.error.name}: ${r.error.message}`);
  };

  const ensureHelpers = async (entry: Entry, sb: Sandbox): Promise<void> => {
    const s = stateOf(entry);
    if (s.helpers) return;
    await internal(sb, `exec(${pyText(PY_HELPERS)}, globals())`, "defining the interpreter's helpers");
    s.helpers = true;
  };

  app.get("/health", (c) => c.text("OK"));

  app.post("/execute", async (c) => {
    const { entry, who } = c.env;
    const body = parse(executeBody, await readJsonRequest(c.req.raw, o.maxJsonBytes, false, (reason) => new PlainError(400, reason)));
    if (body.context_id && body.language) throw new PlainError(400, "Only one of context_id or language can be provided");
    const own = sandboxLanguage(entry);
    let ctx: CodeContext;
    if (body.context_id) ctx = contextOf(entry, body.context_id);
    else {
      const wanted = normalizeLanguage(body.language);
      if (!runs(own, wanted)) throw new PlainError(404, `no ${wanted} context in this sandbox: it runs ${own} (E2B templates: code-interpreter-v1 and agentbox-python run python, agentbox-javascript runs javascript)`);
      ctx = contextOf(entry, DEFAULT_CONTEXT);
    }
    const env = body.env_vars && Object.keys(body.env_vars).length > 0 ? body.env_vars : undefined;
    if (env && own !== "python") throw new PlainError(400, `env_vars need a Python sandbox: this one runs ${own} (no process environment)`);
    const timeoutMs = who.quota.maxRunMs;
    const code = body.code;

    c.header("content-type", "application/x-ndjson");
    return stream(c, async (out) => {
      const ac = new AbortController();
      out.onAbort(() => ac.abort());
      const hangUp = () => ac.abort();
      c.req.raw.signal.addEventListener("abort", hangUp, { once: true });
      // Output arrives through synchronous callbacks; chain the writes to keep their order.
      let chain: Promise<unknown> = Promise.resolve();
      const send = (line: Record<string, unknown>) => {
        chain = chain.then(() => out.write(JSON.stringify(line) + "\n")).catch(() => ac.abort());
      };
      const stamp = () => new Date().toISOString();
      let mainSent = false;
      try {
        const r = await registry.use(entry, async (sb) => {
          const isDefault = ctx.id === DEFAULT_CONTEXT;
          if (!isDefault || env) await ensureHelpers(entry, sb);
          const cell = isDefault ? code : `__e2b_run(${JSON.stringify(ctx.id)}, ${pyText(ctx.cwd)}, "${b64(code)}"${env ? `, "${b64(JSON.stringify(env))}"` : ""})`;
          const setEnv = isDefault && env;
          if (setEnv) await internal(sb, `__e2b_env_saved = __e2b_env_set("${b64(JSON.stringify(env))}")`, "setting env_vars");
          try {
            ctx.executions++;
            return await sb.runCode(cell, {
              timeoutMs,
              signal: ac.signal,
              onStdout: (text) => send({ type: "stdout", text, timestamp: stamp() }),
              onStderr: (text) => send({ type: "stderr", text, timestamp: stamp() }),
              onResult: (res) => {
                if (res.main) mainSent = true;
                send(resultLine(res));
              },
            });
          } finally {
            if (setEnv && !sb.closed) await internal(sb, `__e2b_env_restore(__e2b_env_saved)\ndel __e2b_env_saved`, "restoring the environment").catch(() => undefined);
          }
        });
        if (r.value !== undefined && !mainSent) send(resultLine({ data: { "text/plain": r.value }, main: true }));
        if (r.error) send({ type: "error", name: r.error.name, value: r.error.message, traceback: r.error.traceback });
        else if (r.limitHit === "timeoutMs") send({ type: "error", name: "TimeoutError", value: `the run took longer than ${timeoutMs} ms (this API key's maxRunMs) and was interrupted`, traceback: "" });
        else if (r.limitHit) send({ type: "error", name: "LimitError", value: `the run hit the sandbox's ${r.limitHit} limit`, traceback: "" });
      } catch (e) {
        if (e instanceof LimitError) {
          send({ type: "error", name: e.limit === "timeoutMs" ? "TimeoutError" : "LimitError", value: `${e.message} (the sandbox was stopped)`, traceback: "" });
        } else {
          const { status, body: err } = toHttp(e);
          if (status >= 500 && !(e instanceof HttpError) && !ac.signal.aborted) o.log(`error: e2b execute: ${(e as Error)?.stack ?? String(e)}`);
          send({ type: "error", name: err.error.name, value: err.error.message, traceback: "" });
        }
      } finally {
        c.req.raw.signal.removeEventListener("abort", hangUp);
      }
      send({ type: "number_of_executions", execution_count: ctx.executions });
      send({ type: "end_of_execution" });
      await chain;
    });
  });

  const contextBody = (ctx: CodeContext) => ({ id: ctx.id, language: ctx.language, cwd: ctx.cwd });

  app.get("/contexts", (c) => c.json([...stateOf(c.env.entry).contexts.values()].map(contextBody)));

  app.post("/contexts", async (c) => {
    const { entry } = c.env;
    const body = parse(createContextBody, await readJsonRequest(c.req.raw, o.maxJsonBytes, true, (reason) => new PlainError(400, reason)));
    const language = normalizeLanguage(body.language);
    const own = sandboxLanguage(entry);
    if (!runs(own, language)) throw new PlainError(400, `this sandbox runs ${own}, not ${language}`);
    if (own !== "python") throw new PlainError(400, `only Python sandboxes have more than the default context (this one runs ${own}; its one REPL is context "${DEFAULT_CONTEXT}")`);
    const s = stateOf(entry);
    if (s.contexts.size > MAX_CONTEXTS) throw new PlainError(400, `a sandbox has at most ${MAX_CONTEXTS} contexts besides the default one`);
    const ctx: CodeContext = { id: randomUUID(), language, cwd: body.cwd ?? DEFAULT_CWD, executions: 0 };
    await registry.use(entry, async (sb) => {
      await ensureHelpers(entry, sb);
      const r = await sb.runCode(`__import__("os").path.isdir(${pyText(ctx.cwd)})`, { timeoutMs: 30_000 });
      if (r.value !== "True") throw new PlainError(400, `cwd ${ctx.cwd} is not a directory in the sandbox`);
      await internal(sb, `__e2b_contexts[${JSON.stringify(ctx.id)}] = {"__name__": "__main__", "__builtins__": __builtins__}`, "creating the context");
    });
    s.contexts.set(ctx.id, ctx);
    return c.json(contextBody(ctx));
  });

  app.post("/contexts/:id/restart", async (c) => {
    const { entry } = c.env;
    const ctx = contextOf(entry, c.req.param("id"));
    const own = sandboxLanguage(entry);
    if (own !== "python") throw new PlainError(400, `restarting a context needs a Python sandbox (this one runs ${own}; create a new sandbox for a fresh REPL)`);
    await registry.use(entry, async (sb) => {
      if (ctx.id === DEFAULT_CONTEXT) await internal(sb, PY_RESET_DEFAULT, "restarting the context");
      else await internal(sb, `__e2b_contexts[${JSON.stringify(ctx.id)}] = {"__name__": "__main__", "__builtins__": __builtins__}`, "restarting the context");
    });
    ctx.executions = 0;
    return c.body(null, 204);
  });

  app.delete("/contexts/:id", async (c) => {
    const { entry } = c.env;
    const id = c.req.param("id");
    const ctx = contextOf(entry, id);
    if (ctx.id === DEFAULT_CONTEXT) throw new PlainError(400, `the default context is the sandbox's REPL and cannot be removed (kill the sandbox instead)`);
    stateOf(entry).contexts.delete(id);
    await registry.use(entry, (sb) => internal(sb, `__e2b_contexts.pop(${JSON.stringify(id)}, None)\nNone`, "removing the context"));
    return c.body(null, 204);
  });

  app.notFound((c) => c.text(`agentbox's code interpreter face has no route ${c.req.method} ${c.req.path}`, 404));
  return app;
}

function parse<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  throw new PlainError(400, `invalid request: ${r.error.issues.map((i) => `${i.path.map(String).join(".") || "(body)"}: ${i.message}`).join("; ")}`);
}
