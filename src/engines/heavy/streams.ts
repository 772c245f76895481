// Byte streams over the guest-agent channel: a guest process's connection to the agent's egress
// proxy (opened by the agent), or the host's connection to a guest port (opened by the host). Each
// stream is a Node Duplex on the host. Data goes in binary frames (protocol/frames.ts) of at most
// STREAM_CHUNK_BYTES; each side sends at most STREAM_WINDOW_BYTES of a stream ahead of the other's
// `ack`s, so neither side buffers more than a window per stream and a guest process that stops
// reading stalls its own stream, never the channel (interrupts, other streams). The agent is
// hostile: data past the window, data or control for a stream it does not have, and more streams
// than MAX_STREAMS are protocol violations that fail the whole channel (the sandbox then ends);
// they never grow host memory.
import { Duplex } from "node:stream";
import { ProtocolError } from "../../errors.js";
import { MAX_STREAMS, STREAM_CHUNK_BYTES, STREAM_WINDOW_BYTES, type StreamControl } from "../../protocol/agent.js";

/** What the multiplexer needs of the channel. */
export interface StreamTransport {
  sendControl(msg: StreamControl): void;
  sendData(stream: number, data: Buffer): void;
  /** Fail the channel for good (a protocol violation). */
  fail(err: Error): void;
}

export type StreamOpenListener = (stream: AgentStream, kind: "proxy") => void;

export class StreamMux {
  private readonly streams = new Map<number, AgentStream>();
  private nextId = 0;
  private closed: Error | undefined;
  /** Gets each stream the agent opens; without one, they are closed at once. */
  onOpen: StreamOpenListener | undefined;

  constructor(private readonly transport: StreamTransport) {}

  get size(): number {
    return this.streams.size;
  }

  /** Connect to TCP `port` on the guest's loopback; resolves once the agent has connected. */
  connect(port: number): Promise<AgentStream> {
    if (this.closed) return Promise.reject(this.closed);
    if (this.streams.size >= MAX_STREAMS) return Promise.reject(new Error(`more than ${MAX_STREAMS} streams open to the guest`));
    this.nextId = (this.nextId + 2) % 0x100000000;
    const s = new AgentStream(this.nextId, this);
    this.streams.set(s.id, s);
    return new Promise((resolve, reject) => {
      s.pendingOpen = { resolve: () => resolve(s), reject };
      this.transport.sendControl({ type: "stream", op: "connect", stream: s.id, port });
    });
  }

  /** A control message from the agent (already schema-checked). */
  onControl(m: StreamControl): void {
    if (this.closed) return;
    if (m.op === "open") {
      if (m.stream % 2 !== 1 || this.streams.has(m.stream)) return this.violation(`opened stream ${m.stream}, which is not a free agent stream id`);
      if (this.streams.size >= MAX_STREAMS) return this.violation(`opened more than ${MAX_STREAMS} streams`);
      const s = new AgentStream(m.stream, this);
      this.streams.set(s.id, s);
      if (this.onOpen) this.onOpen(s, m.kind);
      else s.destroy();
      return;
    }
    const s = this.streams.get(m.stream);
    // Control for a stream the host already closed crosses the host's close: not a violation.
    if (!s) return;
    switch (m.op) {
      case "opened":
        return s.opened();
      case "ack":
        return s.credit(m.bytes);
      case "end":
        return s.remoteEnd();
      case "close":
        this.streams.delete(s.id);
        return s.remoteClose(m.error);
      default:
        return this.violation(`sent "${m.op}", which only the host sends`);
    }
  }

  /** Data from the agent for `stream`. */
  onData(stream: number, data: Buffer): void {
    if (this.closed) return;
    const s = this.streams.get(stream);
    if (!s) return; // crossed the host's close
    if (!s.received(data)) this.violation(`sent more than the ${STREAM_WINDOW_BYTES}-byte window on stream ${stream}`);
  }

  /** The channel ended: every stream is destroyed with `err`. */
  closeAll(err: Error): void {
    if (this.closed) return;
    this.closed = err;
    const all = [...this.streams.values()];
    this.streams.clear();
    for (const s of all) s.remoteClose(err.message);
  }

  /** @internal */ send(msg: StreamControl): void {
    if (!this.closed) this.transport.sendControl(msg);
  }
  /** @internal */ sendData(stream: number, data: Buffer): void {
    if (!this.closed) this.transport.sendData(stream, data);
  }
  /** @internal the host side closed `s`. */
  forget(s: AgentStream): void {
    if (this.streams.get(s.id) === s) this.streams.delete(s.id);
  }

  private violation(what: string): void {
    this.transport.fail(new ProtocolError(`guest agent ${what}`));
  }
}

/** One stream: what is written goes to the guest side, what the guest side sends is read. */
export class AgentStream extends Duplex {
  /** @internal */ pendingOpen: { resolve: () => void; reject: (e: Error) => void } | undefined;
  /** Bytes the guest side may still receive before its next ack. */
  private window = STREAM_WINDOW_BYTES;
  /** Bytes received and not yet acknowledged (acked as the reader takes them). */
  private unacked = 0;
  /** Bytes received beyond what was acknowledged: the guest may not exceed the window. */
  private inFlight = 0;
  private waiting: { data: Buffer; callback: (e?: Error | null) => void } | undefined;
  private remoteClosed = false;
  private wantsRead = true;

  constructor(
    readonly id: number,
    private readonly mux: StreamMux,
  ) {
    super({ allowHalfOpen: true });
  }

  /** @internal */ opened(): void {
    const p = this.pendingOpen;
    this.pendingOpen = undefined;
    p?.resolve();
  }

  /** @internal */ credit(bytes: number): void {
    this.window = Math.min(STREAM_WINDOW_BYTES, this.window + bytes);
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      this.sendChunks(w.data, w.callback);
    }
  }

  /** @internal returns false when the guest side overran the window. */
  received(data: Buffer): boolean {
    this.inFlight += data.length;
    if (this.inFlight > STREAM_WINDOW_BYTES) return false;
    this.unacked += data.length;
    if (!this.push(data)) this.wantsRead = false;
    if (this.wantsRead) this.ack();
    return true;
  }

  /** @internal the guest side sends no more. */
  remoteEnd(): void {
    this.push(null);
  }

  /** @internal the guest side is gone (or the channel): destroy without telling it again. */
  remoteClose(error?: string): void {
    this.remoteClosed = true;
    const err = error !== undefined ? new Error(`guest side of the stream failed: ${error}`) : undefined;
    if (this.pendingOpen) {
      this.pendingOpen.reject(err ?? new Error("the guest closed the stream"));
      this.pendingOpen = undefined;
      // Nobody holds a stream that never opened: its error went to connect()'s caller, not an 'error' event.
      this.push(null);
      this.destroy();
      return;
    }
    this.push(null);
    this.destroy(err);
  }

  override _read(): void {
    this.wantsRead = true;
    this.ack();
  }

  // A write is sent on the next turn of the event loop, not at once: writes made meanwhile are
  // buffered by the stream and come together in _writev, so the frames are few and large (the
  // cost over the channel is per frame, not per byte).
  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (e?: Error | null) => void): void {
    setImmediate(() => this.sendChunks(chunk, callback));
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (e?: Error | null) => void): void {
    const all = Buffer.concat(chunks.map((c) => c.chunk));
    setImmediate(() => this.sendChunks(all, callback));
  }

  /** Send what the window allows; the rest (and the write's callback) waits for credit. */
  private sendChunks(chunk: Buffer, callback: (e?: Error | null) => void): void {
    let data = chunk;
    while (data.length > 0 && this.window > 0) {
      const n = Math.min(data.length, STREAM_CHUNK_BYTES, this.window);
      this.mux.sendData(this.id, data.subarray(0, n));
      this.window -= n;
      data = data.subarray(n);
    }
    if (data.length > 0) this.waiting = { data, callback };
    else callback();
  }

  override _final(callback: (e?: Error | null) => void): void {
    this.mux.send({ type: "stream", op: "end", stream: this.id });
    callback();
  }

  override _destroy(err: Error | null, callback: (e?: Error | null) => void): void {
    this.mux.forget(this);
    if (!this.remoteClosed) this.mux.send({ type: "stream", op: "close", stream: this.id });
    this.remoteClosed = true;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w.callback(err ?? new Error("stream closed"));
    }
    callback(err);
  }

  private ack(): void {
    if (this.unacked === 0 || this.remoteClosed) return;
    this.mux.send({ type: "stream", op: "ack", stream: this.id, bytes: this.unacked });
    this.inFlight -= this.unacked;
    this.unacked = 0;
  }
}
