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

/** Bytes a stream takes from its writer before the channel has sent them (then the writer waits). */
const OUTBOX_BYTES = 4 * STREAM_CHUNK_BYTES;

/** What the multiplexer needs of the channel. */
export interface StreamTransport {
  sendControl(msg: StreamControl): void;
  sendData(stream: number, data: Buffer): void;
  /** True while the channel still holds written frames the other side has not taken in yet. */
  busy?(): boolean;
  /** Fail the channel for good (a protocol violation). */
  fail(err: Error): void;
}

export type StreamOpenListener = (stream: AgentStream, kind: "proxy") => void;

export class StreamMux {
  private readonly streams = new Map<number, AgentStream>();
  private nextId = 0;
  private closed: Error | undefined;
  /** Streams with data held while the channel was busy: sent when it drains. */
  private readonly held = new Set<AgentStream>();
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

  /** The channel took in all it was given: the streams holding data send it now. */
  drained(): void {
    if (this.held.size === 0) return;
    const all = [...this.held];
    this.held.clear();
    for (const s of all) s.flush();
  }

  /** @internal */ channelBusy(): boolean {
    return this.transport.busy?.() ?? false;
  }
  /** @internal `s` has data to send once the channel drains. */
  whenDrained(s: AgentStream): void {
    this.held.add(s);
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
    this.held.delete(s);
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
  /** Written data not sent yet (window, busy channel), at most about OUTBOX_BYTES. */
  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  /** A write's callback, held while the outbox is full: the writer's backpressure. */
  private writeCallback: ((e?: Error | null) => void) | undefined;
  /** _final's callback, held until the outbox is sent (`end` goes after the data). */
  private finalCallback: ((e?: Error | null) => void) | undefined;
  private flushScheduled = false;
  private remoteClosed = false;
  private wantsRead = true;

  constructor(
    readonly id: number,
    private readonly mux: StreamMux,
  ) {
    super({ allowHalfOpen: true, writableHighWaterMark: STREAM_CHUNK_BYTES });
  }

  /** @internal */ opened(): void {
    const p = this.pendingOpen;
    this.pendingOpen = undefined;
    p?.resolve();
  }

  /** @internal */ credit(bytes: number): void {
    this.window = Math.min(STREAM_WINDOW_BYTES, this.window + bytes);
    if (this.outboxBytes > 0 || this.finalCallback) this.schedule();
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

  // Writes go to the outbox and are sent on the next turn of the event loop, or, while the
  // channel still holds earlier frames, once it drains: what is written meanwhile is sent together,
  // so the frames are few and large (the cost over the channel, under gVisor above all, is per
  // frame more than per byte). The write's callback waits only while the outbox is full.
  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (e?: Error | null) => void): void {
    this.enqueue([chunk], callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (e?: Error | null) => void): void {
    this.enqueue(
      chunks.map((c) => c.chunk),
      callback,
    );
  }

  private enqueue(chunks: Buffer[], callback: (e?: Error | null) => void): void {
    for (const c of chunks) {
      if (c.length === 0) continue;
      this.outbox.push(c);
      this.outboxBytes += c.length;
    }
    this.schedule();
    if (this.outboxBytes < OUTBOX_BYTES) callback();
    else this.writeCallback = callback;
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    if (this.mux.channelBusy()) this.mux.whenDrained(this);
    else setImmediate(() => this.flush());
  }

  /** @internal Send what the window allows; the rest waits for credit. */
  flush(): void {
    this.flushScheduled = false;
    if (this.destroyed) return;
    if (this.mux.channelBusy()) {
      this.flushScheduled = true;
      this.mux.whenDrained(this);
      return;
    }
    while (this.outboxBytes > 0 && this.window > 0) {
      const n = Math.min(this.outboxBytes, STREAM_CHUNK_BYTES, this.window);
      this.mux.sendData(this.id, this.takeFromOutbox(n));
      this.window -= n;
    }
    if (this.writeCallback && this.outboxBytes < OUTBOX_BYTES) {
      const cb = this.writeCallback;
      this.writeCallback = undefined;
      cb();
    }
    if (this.outboxBytes === 0 && this.finalCallback) {
      const cb = this.finalCallback;
      this.finalCallback = undefined;
      this.mux.send({ type: "stream", op: "end", stream: this.id });
      cb();
    }
  }

  /** The outbox's first `n` bytes, taken out. */
  private takeFromOutbox(n: number): Buffer {
    this.outboxBytes -= n;
    const first = this.outbox[0]!;
    if (first.length > n) {
      this.outbox[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.outbox.shift();
      return first;
    }
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const b = this.outbox[0]!;
      if (b.length <= left) {
        parts.push(b);
        this.outbox.shift();
        left -= b.length;
      } else {
        parts.push(b.subarray(0, left));
        this.outbox[0] = b.subarray(left);
        left = 0;
      }
    }
    return Buffer.concat(parts, n);
  }

  override _final(callback: (e?: Error | null) => void): void {
    if (this.outboxBytes > 0) {
      this.finalCallback = callback;
      return this.schedule();
    }
    this.mux.send({ type: "stream", op: "end", stream: this.id });
    callback();
  }

  override _destroy(err: Error | null, callback: (e?: Error | null) => void): void {
    this.mux.forget(this);
    if (!this.remoteClosed) this.mux.send({ type: "stream", op: "close", stream: this.id });
    this.remoteClosed = true;
    this.outbox = [];
    this.outboxBytes = 0;
    for (const cb of [this.writeCallback, this.finalCallback]) cb?.(err ?? new Error("stream closed"));
    this.writeCallback = undefined;
    this.finalCallback = undefined;
    callback(err);
  }

  private ack(): void {
    if (this.unacked === 0 || this.remoteClosed) return;
    this.mux.send({ type: "stream", op: "ack", stream: this.id, bytes: this.unacked });
    this.inFlight -= this.unacked;
    this.unacked = 0;
  }
}
