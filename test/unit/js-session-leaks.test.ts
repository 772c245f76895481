// Handle lifetimes in the JavaScript worker's session: after many runs that use every bridge
// (console, random, text, timers, fs both ways, modules, fetch, errors, TypeScript), the QuickJS
// runtime's live object count is back at its baseline, and disposing the session frees its context.
// The session runs in this process on QuickJS (only this file's own test cells, never user code),
// with frames captured in memory and fetch answered synchronously.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MessageChannel } from "node:worker_threads";
import { parse } from "acorn";
import { transform } from "sucrase";
import { newQuickJSWASMModuleFromVariant } from "quickjs-emscripten-core";
import * as variantModule from "@jitl/quickjs-wasmfile-release-sync";
import type { HostMessage } from "../../src/protocol/messages.js";
import { setMuted } from "../../src/worker/common.js";
import { HostInbox } from "../../src/worker/js/inbox.js";
import { JsSession } from "../../src/worker/js/session.js";
import type { GuestContext } from "../../src/worker/js/context.js";

type Frame = { type: string; [k: string]: unknown };

const CELLS = [
  "console.log('out', [1, 2n], { a: 1 }); console.error('err'); Math.random() + crypto.getRandomValues(new Uint8Array(4))[0]",
  "new TextDecoder().decode(new TextEncoder().encode('héllo ' + crypto.randomUUID()))",
  "import fs from 'fs';\nfs.mkdirSync('/tmp/d', { recursive: true });\nfs.writeFileSync('/tmp/d/f.txt', 'data');\nfs.appendFileSync('/tmp/d/f.txt', new Uint8Array([65]));\n[fs.readFileSync('/tmp/d/f.txt', 'utf8'), fs.readFileSync('/tmp/d/f.txt').length, fs.readdirSync('/tmp/d', { withFileTypes: true })[0].isFile(), fs.statSync('/tmp/d').isDirectory()]",
  "const { renameSync, existsSync, rmSync } = await import('node:fs'); renameSync('/tmp/d/f.txt', '/tmp/d/g.txt'); rmSync('/tmp/d', { recursive: true }); existsSync('/tmp/d')",
  "import { readFile } from 'fs/promises';\ntry { await readFile('/nope') } catch (e) { e.code }",
  "let n = 0; const t = setInterval(() => { if (++n === 3) clearInterval(t) }, 1); setTimeout(() => console.log('later'), 2); await new Promise((r) => setTimeout(r, 1)); n",
  "const r = await fetch('https://example.test/x', { method: 'POST', body: 'hi', headers: { 'x-a': '1' } }); [r.status, r.headers.get('content-type'), await r.text()]",
  "fetch('https://example.test/fail').catch((e) => e.message)",
  "function f() { throw new TypeError('boom') } f()",
  "Promise.reject(new RangeError('async boom'))",
  "function deep(n) { return deep(n + 1) } deep(0)",
  "import x from 'nowhere';\nx",
  "let x = ;",
  "const o = { k: 1 }; let [a] = [o.k]; a + [...new Map([[1, 2]])].length",
];
// The cells make no reference cycles (a class and its prototype would be one): a cycle is freed
// only by QuickJS's cycle collector, on its own schedule (quickjs-emscripten has no call to run
// it), so acyclic guest values keep the count a measure of the worker's own handles.

function harness() {
  const frames: Frame[] = [];
  const { port1, port2 } = new MessageChannel();
  const wake = new Int32Array(new SharedArrayBuffer(4));
  const answer = (m: unknown) => {
    port1.postMessage(m);
    Atomics.add(wake, 0, 1);
  };
  const send = (m: unknown) => {
    const f = m as Frame;
    frames.push(f);
    if (f.type !== "fetch") return;
    const req = f.req as number;
    if (String(f.url).endsWith("/fail")) answer({ type: "fetchResult", id: f.id, req, ok: false, error: { name: "TypeError", message: "refused by test" } });
    else answer({ type: "fetchResult", id: f.id, req, ok: true, status: 200, statusText: "OK", url: f.url, redirected: false, headers: [["content-type", "text/plain"]], body: Buffer.from("answer").toString("base64") });
  };
  return { frames, send, inbox: new HostInbox(port2, wake), close: () => { port1.close(); port2.close(); } };
}

function liveObjects(guest: GuestContext): number {
  const usage = guest.rt.computeMemoryUsage();
  try {
    return (guest.ctx.dump(usage) as { obj_count: number }).obj_count;
  } finally {
    usage.dispose();
  }
}

describe("JavaScript worker session: handle lifetimes", () => {
  it("returns the runtime's object count to its baseline after many runs through every bridge", async () => {
    const qjs = await newQuickJSWASMModuleFromVariant(variantModule.default as never);
    const h = harness();
    setMuted(true); // console output goes through the shared batcher: not onto this test's stdout
    using session = new JsSession({ qjs, loadSucrase: () => transform, parse, inbox: h.inbox, send: h.send });
    const configure: HostMessage = {
      type: "configure", id: 1, seed: 7, clock: "real", env: {}, mounts: [], language: "typescript",
      limits: { memoryBytes: 64 << 20, outputBytes: 1 << 20, vfsBytes: 1 << 20, vfsFiles: 100 },
      network: { maxRequestBytes: 1 << 16 },
    } as HostMessage;
    session.handle(configure);
    assert.deepEqual(h.frames.shift(), { type: "reply", id: 1, ok: true });
    let id = 1;
    const round = () => {
      for (const code of CELLS) session.handle({ type: "run", id: ++id, code });
      session.handle({ type: "fs", id: ++id, op: "write", path: "/tmp/host.bin", data: "AAEC" });
      session.handle({ type: "fs", id: ++id, op: "read", path: "/tmp/host.bin" });
      session.handle({ type: "fs", id: ++id, op: "list", path: "/tmp" });
      session.handle({ type: "fs", id: ++id, op: "remove", path: "/tmp/host.bin" });
      session.handle({ type: "fs", id: ++id, op: "read", path: "/tmp/missing" });
    };
    // The first rounds create what stays for the context's life (module records, shapes, atoms,
    // the runtime's service context for memory statistics).
    round();
    round();
    const guest = session.context!;
    const baseline = liveObjects(guest);
    for (let i = 0; i < 20; i++) round();
    const after = liveObjects(guest);
    setMuted(false);

    const results = h.frames.filter((f) => f.type === "result");
    assert.equal(results.length, CELLS.length * 22);
    const last = results.slice(-CELLS.length);
    assert.deepEqual(last.map((r) => (r.error as { name?: string } | null)?.name ?? null), [null, null, null, null, null, null, null, null, "TypeError", "RangeError", "RangeError", "Error", "SyntaxError", null]);
    assert.equal(last[6]!.value, '[200,"text/plain","answer"]');
    assert.equal(last[7]!.value, '"refused by test"');
    assert.equal(h.frames.filter((f) => f.type === "fetch").length, 2 * 22);
    assert.equal(after, baseline, `live QuickJS objects grew from ${baseline} to ${after} over 20 rounds`);

    session.dispose();
    assert.equal(guest.ctx.alive, false);
    assert.equal(guest.rt.alive, false);
    h.close();
  });
});
