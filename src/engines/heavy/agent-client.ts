// Host side of the guest-agent channel, independent of the backend: it only needs the byte
// streams to and from the agent (a gVisor sandbox's stdio today, a virtio-serial port later).
// Frames are size-capped and every message is schema-checked; a channel that breaks the
// protocol is failed for good, with every pending request rejected.
import type { Readable, Writable } from "node:stream";
import { ProtocolError, WorkerCrashedError } from "../../errors.js";
import { BinaryFrame, encodeBinaryFrame, encodeFrame, FrameDecoder, FrameError } from "../../protocol/frames.js";
import { AGENT_MAX_FRAME_BYTES, AGENT_PROTOCOL_VERSION, agentMessageSchema, STREAM_CHUNK_BYTES, type AgentMessage, type AgentRequest } from "../../protocol/agent.js";
import { StreamMux } from "./streams.js";

type Final = Extract<AgentMessage, { type: "pong" | "exit" | "result" | "reply" }>;
type Message = Exclude<AgentMessage, { type: "stream" }>;
export type OutputListener = (stream: "stdout" | "stderr", data: Buffer) => void;
/** Gets a background exec's `started` message: the guest pid of its process. */
export type StartedListener = (pid: number) => void;
/** Gets a run's `display` frames: the result as the agent sent it, unchecked. */
export type DisplayListener = (raw: unknown) => void;

interface Pending {
  resolve: (m: Final) => void;
  reject: (e: Error) => void;
  onOutput?: OutputListener | undefined;
}

export class AgentClient {
  readonly ready: Promise<Extract<AgentMessage, { type: "ready" }>>;
  private readonly pending = new Map<number, Pending>();
  private readonly displays = new Map<number, DisplayListener>();
  private readonly starts = new Map<number, StartedListener>();
  private readonly decoder = new FrameDecoder(AGENT_MAX_FRAME_BYTES, STREAM_CHUNK_BYTES);
  /** The byte streams over this channel (egress proxy connections, forwarded ports). */
  readonly streams: StreamMux;
  private nextId = 0;
  private failure: Error | undefined;
  private readyResolve!: (m: Extract<AgentMessage, { type: "ready" }>) => void;
  private readyReject!: (e: Error) => void;
  /** Called once when the channel fails (protocol violation or end of stream). */
  onFail: ((e: Error) => void) | undefined;

  constructor(
    input: Readable,
    private readonly output: Writable,
  ) {
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => undefined);
    input.on("data", (chunk: Buffer) => this.onData(chunk));
    input.on("end", () => this.fail(new WorkerCrashedError("the guest agent closed its channel")));
    input.on("error", (e) => this.fail(new WorkerCrashedError(`the guest agent's channel failed: ${e.message}`)));
    output.on("error", () => undefined);
    this.streams = new StreamMux({
      sendControl: (m) => {
        if (!this.failure) this.output.write(encodeFrame(m));
      },
      sendData: (stream, data) => {
        if (!this.failure) this.output.write(encodeBinaryFrame(stream, data));
      },
      busy: () => this.output.writableNeedDrain,
      fail: (e) => this.fail(e),
    });
    output.on("drain", () => this.streams.drained());
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  newId(): number {
    return ++this.nextId;
  }

  /** Send a request and wait for its final answer; output frames with its id go to `onOutput`. */
  request(msg: AgentRequest, onOutput?: OutputListener): Promise<Final> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.set(msg.id, { resolve, reject, onOutput });
      this.output.write(encodeFrame(msg));
    });
  }

  /**
   * Pass the `display` frames of request `id` to `fn` until the returned function is called.
   * Apart from request(), so the backends that carry requests need not know about results.
   */
  watchDisplays(id: number, fn: DisplayListener): () => void {
    this.displays.set(id, fn);
    return () => void this.displays.delete(id);
  }

  /**
   * Pass the `started` message of background exec `id` to `fn` (once). Apart from request(), as
   * watchDisplays, so the backends that carry requests need not know about background commands.
   */
  watchStarted(id: number, fn: StartedListener): () => void {
    this.starts.set(id, fn);
    return () => void this.starts.delete(id);
  }

  /** Send a message that has no answer of its own (interrupt). */
  send(msg: AgentRequest): void {
    if (!this.failure) this.output.write(encodeFrame(msg));
  }

  /** Fail the channel: pending requests reject with `err`. Idempotent. */
  fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.readyReject(err);
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(err);
    this.streams.closeAll(err);
    this.onFail?.(err);
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    let raw: unknown[];
    try {
      raw = this.decoder.push(chunk);
    } catch (e) {
      return this.fail(new ProtocolError(`guest agent sent a malformed frame: ${(e as FrameError).message}`));
    }
    for (const r of raw) {
      if (r instanceof BinaryFrame) {
        this.streams.onData(r.stream, r.data);
        if (this.failure) return;
        continue;
      }
      const parsed = agentMessageSchema.safeParse(r);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return this.fail(new ProtocolError(`guest agent sent an invalid message: ${issue ? `${issue.path.join(".")}: ${issue.message}` : "schema mismatch"}`));
      }
      if (parsed.data.type === "stream") this.streams.onControl(parsed.data);
      else this.dispatch(parsed.data);
      if (this.failure) return;
    }
  }

  private dispatch(m: Message): void {
    switch (m.type) {
      case "ready":
        if (m.v !== AGENT_PROTOCOL_VERSION) return this.fail(new ProtocolError(`guest agent speaks protocol v${m.v}, host v${AGENT_PROTOCOL_VERSION}`));
        return this.readyResolve(m);
      case "output": {
        const p = this.pending.get(m.id);
        if (p) p.onOutput?.(m.stream, Buffer.from(m.data, "base64"));
        return; // late output of a finished request is dropped
      }
      case "started": {
        const fn = this.starts.get(m.id);
        this.starts.delete(m.id); // one per exec: a repeat from the guest is dropped
        fn?.(m.pid);
        return;
      }
      case "display":
        this.displays.get(m.id)?.(m.result);
        return; // as output: one for a run nobody watches (any more) is dropped
      default: {
        const p = this.pending.get(m.id);
        if (!p) return; // a late answer (e.g. the exit of a command the host gave up on)
        this.pending.delete(m.id);
        this.displays.delete(m.id); // its results end with its answer, even one in the same chunk
        this.starts.delete(m.id);
        p.resolve(m);
      }
    }
  }
}
