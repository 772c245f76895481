// One sandbox's QuickJS runtime and context, from configure until the next configure or the end:
// limits, the interrupt handler, the host functions, the prelude and the module loader. Handles
// that live as long as the context (the prelude's hooks) belong to its Scope, freed before the
// context and the runtime themselves.
import { Scope, type QuickJSContext, type QuickJSRuntime, type QuickJSWASMModule } from "quickjs-emscripten-core";
import { realNow } from "../common.js";
import { installModuleLoader } from "./modules.js";
import { installPrelude, type Hooks } from "./prelude.js";
import { epilogue, stopRequested } from "./state.js";
import { GuestValues, type HostFn } from "./values.js";

/** QuickJS's C stack budget: larger values let deep recursion overflow the worker's own stack. */
const MAX_STACK_BYTES = 256 * 1024;

export class GuestContext implements Disposable {
  readonly rt: QuickJSRuntime;
  readonly ctx: QuickJSContext;
  readonly values: GuestValues;
  readonly hooks: Hooks;
  private readonly scope = new Scope();

  /** `hostFunctions` gives the functions the prelude keeps (each concern contributes its own). */
  constructor(qjs: QuickJSWASMModule, memoryBytes: number, hostFunctions: (values: GuestValues) => Record<string, HostFn>) {
    const rt = qjs.newRuntime();
    rt.setMemoryLimit(memoryBytes);
    rt.setMaxStackSize(MAX_STACK_BYTES);
    rt.setInterruptHandler(() => stopRequested() || (epilogue.untilMs > 0 && realNow() > epilogue.untilMs));
    this.rt = rt;
    this.ctx = rt.newContext();
    this.values = new GuestValues(this.ctx);
    const ctx = this.ctx;
    this.hooks = Scope.withScope((scope) => {
      const host = scope.manage(ctx.newObject());
      for (const [name, f] of Object.entries(hostFunctions(this.values))) ctx.setProp(host, name, scope.manage(ctx.newFunction(name, f)));
      return installPrelude(ctx, host, this.scope);
    });
    installModuleLoader(rt, ctx, this.hooks.moduleSource);
  }

  dispose(): void {
    this.scope.dispose();
    if (this.ctx.alive) this.ctx.dispose();
    if (this.rt.alive) this.rt.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
