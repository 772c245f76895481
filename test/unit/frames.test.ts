import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeFrame, FrameDecoder, FrameError } from "../../src/protocol/frames.js";
import { workerMessageSchema } from "../../src/protocol/messages.js";

describe("frames", () => {
  it("round-trips messages, whole and split at every byte", () => {
    const msgs = [{ type: "run", id: 1, code: "print('é')" }, { a: [1, 2, 3] }, "x"];
    const wire = Buffer.concat(msgs.map(encodeFrame));
    assert.deepEqual(new FrameDecoder().push(wire), msgs);
    const d = new FrameDecoder();
    const out: unknown[] = [];
    for (let i = 0; i < wire.length; i++) out.push(...d.push(wire.subarray(i, i + 1)));
    assert.deepEqual(out, msgs);
  });

  it("refuses a frame larger than its cap before buffering it", () => {
    const d = new FrameDecoder(16);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(1_000_000);
    assert.throws(() => d.push(head), FrameError);
    assert.throws(() => d.push(encodeFrame({})), FrameError, "a failed stream stays failed");
  });

  it("reports a body that is not JSON", () => {
    const body = Buffer.from("{nope");
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    assert.throws(() => new FrameDecoder().push(Buffer.concat([head, body])), /not valid JSON/);
  });
});

describe("worker message schema", () => {
  it("accepts a result", () => {
    const ok = workerMessageSchema.safeParse({ type: "result", id: 3, value: "2", error: null, limitHit: null, durationMs: 1.5, vfsDigest: "a".repeat(64) });
    assert.equal(ok.success, true);
  });

  it("rejects unknown types, extra keys, bad limit names and oversize output", () => {
    const bad = [
      { type: "evil", id: 1 },
      { type: "result", id: 3, value: null, error: null, limitHit: null, durationMs: 1, vfsDigest: "a".repeat(64), extra: 1 },
      { type: "result", id: 3, value: null, error: null, limitHit: "cpu", durationMs: 1, vfsDigest: "a".repeat(64) },
      { type: "output", id: 1, stream: "stdout", data: "x".repeat(2 * 1024 * 1024) },
      { type: "output", id: -1, stream: "stdout", data: "x" },
      { type: "reply", id: 1, ok: true, entries: [{ name: "a", path: "/a", type: "socket", size: 0 }] },
    ];
    for (const m of bad) assert.equal(workerMessageSchema.safeParse(m).success, false, JSON.stringify(m).slice(0, 80));
  });
});
