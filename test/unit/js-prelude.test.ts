// The guest prelude (src/worker/js/prelude.guest.js) on its own: loaded into a QuickJS context
// (never into this process's realm) with stand-in host functions, its pieces checked one by one.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { newQuickJSWASMModuleFromVariant, Scope, type QuickJSContext, type QuickJSHandle, type QuickJSRuntime } from "quickjs-emscripten-core";
import * as variantModule from "@jitl/quickjs-wasmfile-release-sync";
import { FS_EXPORTS, LEXICAL_GLOBAL, MODULE_GLOBAL, preludeSource, PRELUDE_FILE } from "../../src/worker/js/prelude.js";

/** What the stand-in host saw. */
const seen = { dues: [] as number[], fs: [] as string[], fetches: [] as string[] };

function load(rt: QuickJSRuntime, withFetch: boolean): QuickJSContext {
  const ctx = rt.newContext();
  Scope.withScope((scope) => {
    const host = scope.manage(ctx.newObject());
    const fns: Record<string, (...a: QuickJSHandle[]) => QuickJSHandle | void> = {
      write: () => {},
      outputRoom: () => ctx.newNumber(1000),
      random: () => ctx.newNumber(0.5),
      randomBytes: (n) => ctx.newArrayBuffer(new Uint8Array(ctx.getNumber(n)).fill(0xab).buffer),
      encode: (s) => ctx.newArrayBuffer(new Uint8Array(Buffer.from(ctx.getString(s))).buffer),
      decode: (b) => {
        using lt = ctx.getArrayBuffer(b);
        return ctx.newString(Buffer.from(lt.value).toString("utf8"));
      },
      advanceTo: (due) => {
        seen.dues.push(ctx.getNumber(due));
        return ctx.true;
      },
      fs: (op, p) => {
        seen.fs.push(`${ctx.getString(op)} ${ctx.getString(p)}`);
        throw ctx.newError({ name: "Error", message: `ENOENT: no such file or directory, '${ctx.getString(p)}'` });
      },
    };
    if (withFetch) fns.fetch = (url) => {
      seen.fetches.push(ctx.getString(url));
      return ctx.newNumber(seen.fetches.length);
    };
    for (const [name, f] of Object.entries(fns)) ctx.setProp(host, name, scope.manage(ctx.newFunction(name, f)));
    const fn = scope.manage(ctx.unwrapResult(ctx.evalCode(preludeSource(), PRELUDE_FILE, { type: "global", strict: true })));
    const hooks = scope.manage(ctx.unwrapResult(ctx.callFunction(fn, ctx.undefined, host)));
    ctx.setProp(ctx.global, "hooks", hooks); // for these tests only: the worker never exposes them
  });
  return ctx;
}

function evaluate(ctx: QuickJSContext, code: string): unknown {
  using v = ctx.unwrapResult(ctx.evalCode(code, "test.js", { type: "global" }));
  return ctx.dump(v);
}

describe("guest prelude", () => {
  let rt: QuickJSRuntime;
  let ctx: QuickJSContext;
  let net: QuickJSContext;
  before(async () => {
    const qjs = await newQuickJSWASMModuleFromVariant(variantModule.default as never);
    rt = qjs.newRuntime();
    ctx = load(rt, false);
    net = load(rt, true);
  });
  after(() => {
    ctx.dispose();
    net.dispose();
    rt.dispose();
  });

  it("names the same globals as the cell rewriter, and makes no global of its own", () => {
    assert.match(preludeSource(), new RegExp(`"${MODULE_GLOBAL}"`));
    assert.match(preludeSource(), new RegExp(`"${LEXICAL_GLOBAL}"`));
    assert.equal(evaluate(ctx, "typeof prelude"), "undefined");
    assert.deepEqual(evaluate(ctx, "['console', 'crypto', 'setTimeout', 'fetch'].map((k) => typeof globalThis[k])"), ["object", "object", "function", "undefined"]);
    assert.equal(evaluate(ctx, "Object.keys(globalThis).includes('console')"), false); // hidden: not enumerable
  });

  it("shows values the way the REPL prints them, cut at max", () => {
    const show = (expr: string, max = "undefined") => evaluate(ctx, `hooks.show(${expr}, ${max})`);
    assert.equal(show("-0"), "-0");
    assert.equal(show("12n"), "12n");
    assert.equal(show("'a\"b'"), '"a\\"b"');
    assert.equal(show("function named() {}"), "[Function: named]");
    assert.equal(show("{ a: [1, 2n] }"), '{"a":[1,"2"]}');
    assert.equal(show("(() => { const o = {}; o.o = o; return o })()"), "[object Object]");
    assert.equal(show("new TypeError('x')"), "TypeError: x");
    assert.equal(show("'abcdef'", "3"), '"ab');
    assert.equal(show("undefined"), undefined);
  });

  it("describes thrown values, Errors or not", () => {
    const d = (expr: string) => JSON.parse(evaluate(ctx, `hooks.describe(${expr})`) as string) as string[];
    assert.deepEqual(d("new RangeError('r')").slice(0, 2), ["RangeError", "r"]);
    assert.deepEqual(d("42"), ["Error", "Uncaught 42", ""]);
    assert.deepEqual(d("{ get name() { throw 1 } }"), ["Error", "Uncaught [object Object]", ""]);
  });

  it("runs timers in due order, intervals again, and clears them", () => {
    seen.dues.length = 0;
    const order = evaluate(ctx, `
      globalThis.order = [];
      setTimeout(() => order.push("b"), 5000);
      setTimeout(() => order.push("a"), 10);
      const i = setInterval(() => { order.push("i"); if (order.length === 4) clearInterval(i); }, 15);
      while (hooks.fireTimer()) {}
      order`);
    assert.deepEqual(order, ["a", "i", "i", "i", "b"]);
    assert.equal(seen.dues.length, 5);
    assert.deepEqual(seen.dues, [...seen.dues].sort((x, y) => x - y));
    assert.equal(evaluate(ctx, "setTimeout(() => {}, 1); hooks.clearTimers(); hooks.fireTimer()"), false);
    assert.throws(() => evaluate(ctx, "setTimeout('code', 1)"), /timer callback must be a function/);
  });

  it("writes the source of the built-in modules, and refuses others", () => {
    const src = evaluate(ctx, "hooks.moduleSource('fs')") as string;
    for (const name of FS_EXPORTS) assert.match(src, new RegExp(`\\b${name}\\b`));
    assert.match(src, /^const m = __agentbox_module\("fs"\);/);
    assert.match(evaluate(ctx, "hooks.moduleSource('fs/promises')") as string, /readFile, writeFile/);
    assert.throws(() => evaluate(ctx, "hooks.moduleSource('child_process')"), /Cannot find module 'child_process': this sandbox has only 'fs', 'fs\/promises'/);
  });

  it("keeps a rewritten declaration's temporal dead zone until it runs", () => {
    assert.throws(() => evaluate(ctx, `${LEXICAL_GLOBAL}.enter(["late"]); late`), /ReferenceError: Cannot access 'late' before initialization/);
    assert.equal(evaluate(ctx, `late = ${LEXICAL_GLOBAL}.init(["late"], 5); late`), 5);
    assert.equal(evaluate(ctx, `var fixed = 1; ${LEXICAL_GLOBAL}.enter(["fixed"]); fixed`), 1); // a var stays a var
  });

  it("gives fs errors a Node-style code, syscall and path", () => {
    seen.fs.length = 0;
    const e = evaluate(ctx, "try { __agentbox_module('fs').default.readFileSync('/x', 'utf8') } catch (e) { [e.code, e.syscall, e.path] }");
    assert.deepEqual(e, ["ENOENT", "readText", "/x"]);
    assert.deepEqual(seen.fs, ["readText /x"]);
    assert.equal(evaluate(ctx, "__agentbox_module('fs').default.rmSync('/y', { force: true }) ?? 'ok'"), "ok");
    assert.throws(() => evaluate(ctx, "__agentbox_module('fs').default.readFileSync(1)"), /"path" argument must be of type string/);
  });

  it("draws crypto from the host's bytes and checks its arguments", () => {
    assert.equal(evaluate(ctx, "crypto.randomUUID()"), "abababab-abab-4bab-abab-abababababab");
    assert.equal(evaluate(ctx, "Math.random()"), 0.5);
    assert.throws(() => evaluate(ctx, "crypto.getRandomValues(new Float64Array(1))"), /expected an integer TypedArray/);
    assert.equal(evaluate(ctx, "new TextDecoder().decode(new TextEncoder().encode('é'))"), "é");
    assert.throws(() => evaluate(ctx, "new TextDecoder('latin1')"), /only utf-8/);
  });

  it("with a network grant: Headers, fetch requests and answers", () => {
    assert.deepEqual(evaluate(net, "const h = new Headers({ B: '1', a: '2' }); h.append('b', '3'); [Array.from(h), h.get('A'), h.has('c')]"), [[["a", "2"], ["b", "1, 3"]], "2", false]);
    assert.throws(() => evaluate(net, "fetch('https://x.test', { method: 'GET', body: 'no' }); throw 0"), /0|GET request cannot have a body/);
    evaluate(net, "globalThis.got = []; fetch('https://x.test/a').then((r) => r.text()).then((t) => got.push(t)); fetch('https://x.test/b').catch((e) => got.push(e.name + ': ' + e.message)); fetch('https://x.test/c').catch((e) => got.push(e.name + ' ' + e.code)); 0");
    const req = seen.fetches.length;
    evaluate(net, `hooks.fetchDone(${req - 2}, JSON.stringify({ status: 201, statusText: "Created", url: "https://x.test/a", redirected: false, headers: [] }), new Uint8Array([104, 105]).buffer)`);
    evaluate(net, `hooks.fetchDone(${req - 1}, JSON.stringify({ error: { name: "RangeError", message: "too big" } }))`);
    evaluate(net, `hooks.fetchDone(${req}, JSON.stringify({ error: { name: "TypeError", message: "refused", code: "NETWORK_DENIED" } }))`);
    rt.executePendingJobs(-1);
    assert.deepEqual(evaluate(net, "got"), ["RangeError: too big", "TypeError NETWORK_DENIED", "hi"]);
  });
});
