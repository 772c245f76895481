// Checked reads of the arguments the prelude passes to host functions (strings, numbers,
// ArrayBuffers), and copies of host bytes into the guest. A wrong type is a guest TypeError, thrown
// as a QuickJS error handle (quickjs-emscripten frees a thrown handle itself).
import type { QuickJSContext, QuickJSHandle } from "quickjs-emscripten-core";

/** A host function as quickjs-emscripten calls it: borrowed argument handles, an owned result. */
export type HostFn = (...args: QuickJSHandle[]) => QuickJSHandle | void;

export class GuestValues {
  constructor(readonly ctx: QuickJSContext) {}

  str(h: QuickJSHandle | undefined, what: string): string {
    if (!h || this.ctx.typeof(h) !== "string") throw this.ctx.newError({ name: "TypeError", message: `${what} must be a string` });
    return this.ctx.getString(h);
  }

  num(h: QuickJSHandle | undefined, what: string): number {
    if (!h || this.ctx.typeof(h) !== "number") throw this.ctx.newError({ name: "TypeError", message: `${what} must be a number` });
    return this.ctx.getNumber(h);
  }

  /** A string (as UTF-8) or an ArrayBuffer, copied out of the guest's memory. */
  bytes(h: QuickJSHandle | undefined): Uint8Array {
    const ctx = this.ctx;
    if (h && ctx.typeof(h) === "string") return Buffer.from(ctx.getString(h), "utf8");
    if (!h || ctx.typeof(h) !== "object") throw ctx.newError({ name: "TypeError", message: "data must be a string or an ArrayBuffer" });
    using lt = ctx.getArrayBuffer(h);
    return new Uint8Array(lt.value);
  }

  /** A new guest ArrayBuffer holding a copy of `b` (owned by the caller). */
  arrayBuffer(b: Uint8Array): QuickJSHandle {
    return this.ctx.newArrayBuffer(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
  }
}
