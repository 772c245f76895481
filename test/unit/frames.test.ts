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

  it("hands a half-read frame to another decoder with unread(), at every split point", () => {
    const msgs = [{ type: "configure", id: 1, network: { allow: ["example.com"] } }, { type: "run", id: 2, code: "print('é' * 3)" }, { type: "fs", id: 3 }];
    const wire = Buffer.concat(msgs.map(encodeFrame));
    const firstEnd = encodeFrame(msgs[0]).length;
    // The first reader has taken the first frame and any part of what follows; the second gets the rest.
    for (let cut = firstEnd; cut <= wire.length; cut++) {
      const a = new FrameDecoder();
      const taken = a.push(wire.subarray(0, cut));
      const rest = a.unread();
      assert.deepEqual(a.unread(), Buffer.alloc(0), "unread() empties the decoder");
      const b = new FrameDecoder();
      const out = [...taken, ...b.push(rest), ...b.push(wire.subarray(cut))];
      assert.deepEqual(out, msgs, `split at ${cut}`);
      assert.deepEqual(a.push(Buffer.alloc(0)), [], "nothing of the handed-back bytes stays behind");
    }
    // A cut inside the 4-byte length itself.
    const a = new FrameDecoder();
    assert.deepEqual(a.push(wire.subarray(0, 2)), []);
    const b = new FrameDecoder();
    assert.deepEqual([...b.push(a.unread()), ...b.push(wire.subarray(2))], msgs);
  });

  it("unread() on a failed stream throws its error", () => {
    const d = new FrameDecoder(16);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(1_000_000);
    assert.throws(() => d.push(head), FrameError);
    assert.throws(() => d.unread(), FrameError);
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
