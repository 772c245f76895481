// How a Python result leaves the interpreter while the run goes on. guest/display.py's emit hook
// writes each result as one line of JSON to a file descriptor of a character device the worker
// made: the interpreter holds a number, never a JavaScript object (its bridge to JavaScript stays
// closed), and the device's write handler runs here, in the worker, while the guest waits. What
// arrives is hostile (the guest can find the descriptor and write anything to it, just as it can
// call display() with anything): each line is parsed here and handed to the run's ResultGate, and
// a line longer than any result that could still fit is dropped without being buffered.
// Made after every restore: the JavaScript side of the file system is not in the memory snapshot.
import { ERRNO } from "../../vfs/memfs.js";

/** The slice of Emscripten's FS the channel uses. */
export interface DeviceFs {
  ErrnoError: new (errno: number) => Error;
  makedev(major: number, minor: number): number;
  registerDevice(dev: number, ops: DeviceOps): void;
  getDevice(dev: number): unknown;
  mkdev(path: string, mode: number, dev: number): unknown;
  open(path: string, flags: number): { fd: number };
  unlink(path: string): void;
}

/** A device's operations (Emscripten's stream_ops); `read` for devices the guest reads. */
export interface DeviceOps {
  close(): void;
  write(stream: unknown, buffer: ArrayBufferView, offset: number, length: number): number;
  read?(stream: unknown, buffer: Int8Array, offset: number, length: number): number;
  llseek(): number;
}

/** A major device number Emscripten does not hand out (it counts up from 64 for its own devices). */
const DEVICE_MAJOR = 240;
const NODE_PATH = "/dev/.agentbox-display";
const O_WRONLY = 1;
const NEWLINE = 0x0a;

/** Where a run's lines go, and how long one may be. */
export interface DisplaySink {
  /** One complete line, decoded (not yet parsed). */
  line(text: string): void;
  /** A line was dropped for its length, `bytes` so far. */
  tooLong(bytes: number): void;
  /** Longest line worth buffering now. */
  maxLineBytes(): number;
}

export class DisplayChannel {
  /** The descriptor the guest's emit hook writes to. */
  readonly fd: number;
  private sink: DisplaySink | undefined;
  private parts: Buffer[] = [];
  private buffered = 0;
  /** The current line was dropped: ignore bytes until its end. */
  private skipping = false;

  constructor(fs: DeviceFs) {
    const dev = fs.makedev(DEVICE_MAJOR, 0);
    if (fs.getDevice(dev)) throw new Error(`device ${DEVICE_MAJOR}:0 is taken`);
    fs.registerDevice(dev, {
      close: () => undefined,
      write: (_stream, buffer, offset, length) => {
        this.write(new Uint8Array(buffer.buffer, buffer.byteOffset + offset, length));
        return length;
      },
      llseek: () => {
        throw new fs.ErrnoError(ERRNO.EINVAL);
      },
    });
    // Opened, then unlinked: no path names it, so listing /dev shows nothing new.
    fs.mkdev(NODE_PATH, 0o200, dev);
    this.fd = fs.open(NODE_PATH, O_WRONLY).fd;
    fs.unlink(NODE_PATH);
  }

  /** Lines written from now on go to `sink` (until end()). */
  begin(sink: DisplaySink): void {
    this.reset();
    this.sink = sink;
  }

  /** The run is over: a line it left unfinished is dropped, later writes are ignored. */
  end(): void {
    this.reset();
    this.sink = undefined;
  }

  private write(bytes: Uint8Array): void {
    const sink = this.sink;
    if (!sink) return;
    let start = 0;
    while (start <= bytes.length) {
      const nl = bytes.indexOf(NEWLINE, start);
      const end = nl < 0 ? bytes.length : nl;
      const piece = bytes.subarray(start, end);
      if (!this.skipping) {
        if (this.buffered + piece.length > sink.maxLineBytes()) {
          sink.tooLong(this.buffered + piece.length);
          this.skipping = true;
          this.parts = [];
          this.buffered = 0;
        } else if (piece.length > 0) {
          this.parts.push(Buffer.from(piece)); // a copy: Wasm memory is reused
          this.buffered += piece.length;
        }
      }
      if (nl < 0) return;
      const line = this.skipping ? undefined : Buffer.concat(this.parts).toString("utf8");
      this.reset();
      if (line !== undefined && line.length > 0) sink.line(line);
      start = nl + 1;
    }
  }

  private reset(): void {
    this.parts = [];
    this.buffered = 0;
    this.skipping = false;
  }
}
