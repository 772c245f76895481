// The QuickJS module loader: `import` (static imports are rewritten into dynamic ones, see
// js-cell.ts) reaches only the prelude's built-in modules, whose source text the prelude writes;
// "node:fs" and "fs" are one module.
import { Scope, type QuickJSContext, type QuickJSHandle, type QuickJSRuntime } from "quickjs-emscripten-core";

/** `moduleSource` is the prelude's hook, owned by the caller and alive as long as `rt`. */
export function installModuleLoader(rt: QuickJSRuntime, ctx: QuickJSContext, moduleSource: QuickJSHandle): void {
  rt.setModuleLoader(
    (name) =>
      Scope.withScope((scope) => {
        const r = ctx.callFunction(moduleSource, ctx.undefined, scope.manage(ctx.newString(name)));
        if (r.error) return { error: r.error }; // quickjs-emscripten takes the error handle over
        const value = scope.manage(r.value);
        return ctx.typeof(value) === "string" ? ctx.getString(value) : "";
      }),
    (_base, requested) => requested.replace(/^node:/, ""),
  );
}
