// The host side of the guest prelude (prelude.guest.js): its source, read once per process from
// beside this module (dist/ at run time, which the worker may read), the global names it shares
// with the cell rewriter, and installing it into a context, which yields the hooks the worker calls.
import fs from "node:fs";
import { Scope, type QuickJSContext, type QuickJSHandle } from "quickjs-emscripten-core";

/** Global through which the text of the built-in modules (see `moduleSource`) reaches their exports. */
export const MODULE_GLOBAL = "__agentbox_module";

/** Global through which rewritten top-level `let` / `const` / `class` (js-cell.ts) keep their dead zone. */
export const LEXICAL_GLOBAL = "__agentbox_lexical";

/** Names the guest's fs module exports (also used to build `import { x } from "fs"`). */
export const FS_EXPORTS = [
  "readFileSync",
  "writeFileSync",
  "appendFileSync",
  "readdirSync",
  "existsSync",
  "statSync",
  "mkdirSync",
  "rmSync",
  "rmdirSync",
  "unlinkSync",
  "renameSync",
  "copyFileSync",
] as const;

/** File name of the prelude's code in guest stack traces (those frames are cut from tracebacks). */
export const PRELUDE_FILE = "<agentbox>";

const PRELUDE_URL = new URL("./prelude.guest.js", import.meta.url);
let source: string | undefined;

/** The prelude as a script whose value is the prelude function. */
export function preludeSource(): string {
  if (source === undefined) {
    let text: string;
    try {
      text = fs.readFileSync(PRELUDE_URL, "utf8");
    } catch (e) {
      throw new Error(`the guest prelude ${PRELUDE_URL.pathname} cannot be read (is dist/ built by \`npm run build\`?): ${(e as Error).message}`);
    }
    // Parenthesised, the file's one function declaration is an expression: no global is made.
    source = `(${text}\n)`;
  }
  return source;
}

/** What the prelude returns: guest functions the worker calls. Owned by the context's scope. */
export interface Hooks {
  show: QuickJSHandle;
  describe: QuickJSHandle;
  fireTimer: QuickJSHandle;
  clearTimers: QuickJSHandle;
  fetchDone: QuickJSHandle;
  moduleSource: QuickJSHandle;
}

const HOOK_NAMES = ["show", "describe", "fireTimer", "clearTimers", "fetchDone", "moduleSource"] as const;

/**
 * Run the prelude in `ctx` with `host` (borrowed: the prelude keeps its own reference). The hook
 * handles are managed by `owner`, which lives as long as the context.
 */
export function installPrelude(ctx: QuickJSContext, host: QuickJSHandle, owner: Scope): Hooks {
  return Scope.withScope((scope) => {
    const fn = scope.manage(ctx.unwrapResult(ctx.evalCode(preludeSource(), PRELUDE_FILE, { type: "global", strict: true })));
    const hooks = scope.manage(ctx.unwrapResult(ctx.callFunction(fn, ctx.undefined, host)));
    const out = {} as Hooks;
    for (const name of HOOK_NAMES) out[name] = owner.manage(ctx.getProp(hooks, name));
    return out;
  });
}
