// Length-prefixed JSON frames: the wire format between the host and a worker process.
// A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The decoder
// caps the frame size before buffering and reports malformed input as an error value, so a
// hostile peer can neither make the reader buffer without bound nor crash it.

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

export class FrameError extends Error {}

/** Incremental decoder: feed chunks, get parsed JSON values (unvalidated: check them with a schema). */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed: FrameError | undefined;
  constructor(private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Returns the complete frames in `chunk`; throws FrameError once the stream is malformed. */
  push(chunk: Buffer): unknown[] {
    if (this.failed) throw this.failed;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: unknown[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.peek(4);
      const len = head.readUInt32BE(0);
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
