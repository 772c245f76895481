// The worker half of nano Python's network (python/net-channel.ts), in process over a stand-in for
// Emscripten's FS: what a guest writes is checked before anything is sent, one request at a time,
// answers of abandoned requests are dropped, the interrupt word ends a blocked read with EINTR,
// and the guest's own timeout ends the wait.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DeviceFs, DeviceOps } from "../../src/worker/python/display-channel.js";
import { NetChannel, requestProblem } from "../../src/worker/python/net-channel.js";

class ErrnoError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

function setup(opts: { answers?: unknown[][]; now?: () => number } = {}) {
  let ops: DeviceOps | undefined;
  const fs: DeviceFs = {
    ErrnoError,
    makedev: (ma, mi) => ma * 256 + mi,
    registerDevice: (_dev, o) => void (ops = o as DeviceOps),
    getDevice: () => undefined,
    mkdev: () => undefined,
    open: () => ({ fd: 9 }),
    unlink: () => undefined,
  };
  const sent: Record<string, unknown>[] = [];
  const words = new Int32Array(new SharedArrayBuffer(20));
  Atomics.store(words, 2, 5); // run 5 in progress
  // Each wait delivers the next batch of answers (as the main thread would).
  const batches = opts.answers ?? [];
  const queue: unknown[] = [];
  let waits = 0;
  const channel = new NetChannel(fs, {
    inbox: { take: () => queue.shift(), wait: () => void (waits++, queue.push(...(batches.shift() ?? []))) },
    send: (m) => sent.push(m as Record<string, unknown>),
    words,
    idle: () => undefined,
    now: opts.now ?? (() => 0),
  });
  const write = (text: string | Uint8Array) => {
    const b = typeof text === "string" ? new TextEncoder().encode(text) : text;
    return ops!.write(undefined, b, 0, b.length);
  };
  const readAll = () => {
    const buf = new Int8Array(1 << 16);
    const parts: Buffer[] = [];
    for (;;) {
      const n = ops!.read!(undefined, buf, 0, buf.length);
      if (n === 0) break;
      parts.push(Buffer.from(buf.buffer, 0, n));
    }
    const all = Buffer.concat(parts);
    const nl = all.indexOf(0x0a);
    return { head: JSON.parse(all.subarray(0, nl).toString()) as Record<string, unknown>, body: all.subarray(nl + 1).toString() };
  };
  return { channel, sent, words, write, readAll, waits: () => waits };
}

const GET = (url = "http://a.test/") => `${JSON.stringify({ method: "GET", url, headers: [["accept", "*/*"]] })}\n`;

describe("python net channel (worker side)", () => {
  it("without a grant every request is refused at once, nothing sent", () => {
    const t = setup();
    t.write(GET());
    assert.deepEqual(t.readAll().head, { ok: false, error: { name: "TypeError", message: "no network: the sandbox was created without a network grant (network: { allow: [...] })", code: "NETWORK_DENIED" } });
    assert.equal(t.sent.length, 0);
  });

  it("sends a checked request as a fetch frame of the run and serves the answer; stale answers are dropped", () => {
    const ok = { type: "fetchResult", id: 5, req: 1, ok: true, status: 200, statusText: "OK", url: "http://a.test/", redirected: false, headers: [["x", "y"]], body: Buffer.from("hello").toString("base64") };
    const t = setup({ answers: [[{ ...ok, req: 99 }, { ...ok, id: 4 }], [ok]] });
    t.channel.grant = { maxRequestBytes: 10 };
    t.write(`${JSON.stringify({ method: "POST", url: "http://a.test/", headers: [] })}\nbody`);
    assert.deepEqual(t.sent, [{ type: "fetch", id: 5, req: 1, url: "http://a.test/", method: "POST", headers: [], body: Buffer.from("body").toString("base64") }]);
    assert.throws(() => t.write(GET()), (e: unknown) => (e as ErrnoError).errno === 10, "EBUSY while a request is out");
    const r = t.readAll();
    assert.deepEqual(r.head, { ok: true, status: 200, statusText: "OK", url: "http://a.test/", redirected: false, headers: [["x", "y"]] });
    assert.equal(r.body, "hello");
    assert.equal(t.sent.length, 1);
  });

  it("refuses malformed and oversized requests before sending", () => {
    const t = setup();
    t.channel.grant = { maxRequestBytes: 3 };
    const message = (m: string | Uint8Array) => {
      t.write(m);
      return (t.readAll().head.error as { message: string }).message;
    };
    assert.equal(message(`${JSON.stringify({ method: "POST", url: "http://a.test/", headers: [] })}\nbody`), "the request body of 4 bytes is larger than network.maxRequestBytes (3)");
    assert.equal(message("{}"), "malformed request: no header line within its size cap");
    assert.equal(message(new Uint8Array(2 * 1024 * 1024).fill(32)), "malformed request: no header line within its size cap");
    assert.equal(message("[]\n"), "malformed request: not an object");
    assert.equal(message(`${JSON.stringify({ method: "GET", url: "x".repeat(20_000), headers: [] })}\n`), "URL longer than 16384 characters");
    assert.equal(message(`${JSON.stringify({ method: "GET", url: "u", headers: [["a", 1]] })}\n`), "invalid or oversized header");
    assert.equal(t.sent.length, 0);
  });

  it("the interrupt word ends a blocked read with EINTR; the request is abandoned, its answer dropped later", () => {
    const t = setup({ answers: [[], []] });
    t.channel.grant = { maxRequestBytes: 10 };
    t.write(GET());
    Atomics.store(t.words, 0, 2);
    assert.throws(() => t.readAll(), (e: unknown) => (e as ErrnoError).errno === 27);
    Atomics.store(t.words, 0, 0);
    assert.deepEqual(t.readAll().head, { ok: false, error: { name: "TypeError", message: "the request was abandoned: the run was interrupted" } }, "what a guest that ignores SIGINT reads on the retry");
    assert.throws(() => t.readAll(), SyntaxError, "nothing pending: end of file at once");
    t.write(GET()); // a new request may go out
    assert.equal(t.sent.length, 2);
  });

  it("the guest's timeout ends the wait with a TimeoutError answer", () => {
    let clock = 0;
    const t = setup({ now: () => (clock += 40) });
    t.channel.grant = { maxRequestBytes: 10 };
    t.write(`${JSON.stringify({ method: "GET", url: "http://a.test/", headers: [], timeoutMs: 100 })}\n`);
    assert.deepEqual(t.readAll().head, { ok: false, error: { name: "TimeoutError", message: "timed out after 100 ms (the timeout the request was given)" } });
  });

  it("requestProblem: the frame's caps and the request's shape", () => {
    assert.deepEqual(requestProblem({ method: "GET", url: "u", headers: [] }), { method: "GET", url: "u", headers: [], timeoutMs: undefined });
    assert.equal(requestProblem({ method: "GET", url: "u", headers: [], timeoutMs: -1 }), "malformed request: invalid timeoutMs");
    assert.equal(requestProblem({ method: "GET", url: "u", headers: Array(257).fill(["a", "b"]) }), "more than 256 headers");
    assert.equal(requestProblem(null), "malformed request: not an object");
  });
});
