// Length-prefixed JSON frames: the wire format between the host and a worker process.
// A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The decoder
// caps the frame size before buffering and reports malformed input as an error value, so a
// hostile peer can neither make the reader buffer without bound nor crash it.
// Binary frames (the guest agent's byte streams only, when the decoder is built with a binary
// cap): the length's top bit set, then a 4-byte stream id and the raw bytes; the length counts
// both. They carry network and port traffic without JSON or base64 in the way.

export const PROTOCOL_VERSION = 1;
/** Default cap on one frame (a file read of the largest VFS file must fit, base64-encoded). */
export const DEFAULT_MAX_FRAME_BYTES = 96 * 1024 * 1024;

export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), "utf8");
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/** The top bit of a frame's length marks a binary frame. */
const BINARY_FLAG = 0x80000000;

/** A binary frame: `data` for stream `stream`. */
export class BinaryFrame {
  constructor(
    readonly stream: number,
    readonly data: Buffer,
  ) {}
}

export function encodeBinaryFrame(stream: number, data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(8 + data.length);
  frame.writeUInt32BE((BINARY_FLAG | (4 + data.length)) >>> 0, 0);
  frame.writeUInt32BE(stream >>> 0, 4);
  frame.set(data, 8);
  return frame;
}

export class FrameError extends Error {}

/** Incremental decoder: feed chunks, get parsed JSON values (unvalidated: check them with a schema). */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed: FrameError | undefined;
  /** @param maxBinaryBytes cap on a binary frame's data; 0: binary frames are malformed input. */
  constructor(
    private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    private readonly maxBinaryBytes = 0,
  ) {}

  /** Returns the complete frames in `chunk` (parsed JSON, or BinaryFrame); throws FrameError once the stream is malformed. */
  push(chunk: Buffer): unknown[] {
    if (this.failed) throw this.failed;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: unknown[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.peek(4);
      const word = head.readUInt32BE(0);
      if (word & BINARY_FLAG) {
        const len = word & ~BINARY_FLAG;
        if (this.maxBinaryBytes === 0) return this.fail("unexpected binary frame");
        if (len < 4 || len - 4 > this.maxBinaryBytes) return this.fail(`binary frame of ${len} bytes outside 4..${this.maxBinaryBytes + 4}`);
        if (this.buffered < 4 + len) break;
        const body = this.take(4 + len);
        // A copy: the chunk it came in is not kept alive by a consumer that holds on to the data.
        out.push(new BinaryFrame(body.readUInt32BE(4), Buffer.from(body.subarray(8))));
        continue;
      }
      const len = word;
      if (len > this.maxFrameBytes) return this.fail(`frame of ${len} bytes exceeds the ${this.maxFrameBytes}-byte cap`);
      if (this.buffered < 4 + len) break;
      const body = this.take(4 + len).subarray(4);
      try {
        out.push(JSON.parse(body.toString("utf8")));
      } catch {
        return this.fail("frame body is not valid JSON");
      }
    }
    return out;
  }

  /**
   * Take back the bytes pushed but not yet returned as frames (a frame read in part), leaving the
   * decoder empty: another reader of the same stream pushes them first, and nothing is lost.
   */
  unread(): Buffer {
    if (this.failed) throw this.failed;
    const rest = Buffer.concat(this.chunks);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  private fail(message: string): never {
    this.failed = new FrameError(message);
    this.chunks = [];
    this.buffered = 0;
    throw this.failed;
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= n) return first;
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const taken = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered -= n;
    return taken;
  }
}
