// Exposed ports of a heavy-tier sandbox: for each guest port the caller exposes, a TCP listener on
// the host's loopback (a port the OS picks) whose every connection is forwarded to that port on the
// guest's loopback through a stream over the agent channel (streams.ts). The guest has no network
// interface, so this is the only way in. The forwarder is owned by the engine and ends with it:
// kill, death and disposal close every listener and every forwarded connection.
import net from "node:net";
import type { Duplex } from "node:stream";
import { SandboxClosedError } from "../../errors.js";
import type { EnginePorts, ExposedPort } from "../engine.js";

/** Connections forwarded at once, per sandbox: each holds a stream (and its window) on the channel. */
const MAX_FORWARDED_CONNECTIONS = 256;

interface Listener {
  readonly port: number;
  readonly hostPort: number;
  readonly server: net.Server;
}

export class PortForwarder implements EnginePorts {
  private readonly listeners = new Map<number, Promise<Listener>>();
  /** Listeners that have started, by guest port (list() is synchronous). */
  private readonly settled = new Map<number, Listener>();
  /** Every forwarded connection's two ends, so closing a port (or the sandbox) cuts them. */
  private readonly pipes = new Map<number, Set<{ socket: net.Socket; stream?: Duplex }>>();
  private closed: string | undefined;

  /** `connect` opens a stream to a guest port on the sandbox's live channel (a checkpoint may swap it). */
  constructor(readonly connect: (port: number) => Promise<Duplex>) {}

  /** The host port forwarding to guest `port`; the same one when `port` is already exposed. */
  expose(port: number): Promise<number> {
    if (this.closed !== undefined) return Promise.reject(new SandboxClosedError(this.closed));
    let l = this.listeners.get(port);
    if (!l) {
      l = this.listen(port);
      this.listeners.set(port, l);
      // A listener that failed to start is forgotten, so a later expose tries again.
      l.catch(() => this.listeners.delete(port));
    }
    return l.then((x) => x.hostPort);
  }

  list(): ExposedPort[] {
    return [...this.settled.values()].map((l) => ({ port: l.port, hostPort: l.hostPort })).sort((a, b) => a.port - b.port);
  }

  /** Stop forwarding guest `port`: its listener closes and its connections are cut. Idempotent. */
  async close(port: number): Promise<void> {
    const l = this.listeners.get(port);
    if (!l) return;
    this.listeners.delete(port);
    const listener = await l.catch(() => undefined);
    if (listener) await this.shut(listener);
  }

  /** Close every listener and connection; later exposes fail with `reason`. Idempotent. */
  async closeAll(reason: string): Promise<void> {
    this.closed ??= reason;
    const all = [...this.listeners.keys()];
    await Promise.all(all.map((p) => this.close(p)));
  }

  private async listen(port: number): Promise<Listener> {
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => this.forward(port, socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: "127.0.0.1", port: 0 }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const listener: Listener = { port, hostPort: (server.address() as net.AddressInfo).port, server };
    // Closed (or the port closed) while it was starting: it must not outlive that.
    if (this.closed !== undefined || !this.listeners.has(port)) {
      await new Promise((r) => server.close(r));
      throw new SandboxClosedError(this.closed ?? "the port was closed while it was being exposed");
    }
    this.settled.set(port, listener);
    return listener;
  }

  private async shut(l: Listener): Promise<void> {
    if (this.settled.get(l.port) === l) this.settled.delete(l.port);
    const closed = new Promise((r) => l.server.close(r));
    for (const p of this.pipes.get(l.port) ?? []) {
      p.socket.destroy();
      p.stream?.destroy();
    }
    this.pipes.delete(l.port);
    await closed;
  }

  /**
   * One accepted connection: open a stream to the guest port, then pipe both ways. The guest
   * refusing the connection (nothing listens there) closes the host socket; an error on either
   * side closes both. Half-closes pass through (an HTTP client may end its side and still read).
   */
  private forward(port: number, socket: net.Socket): void {
    let set = this.pipes.get(port);
    if (!set) this.pipes.set(port, (set = new Set()));
    let count = 0;
    for (const s of this.pipes.values()) count += s.size;
    if (count >= MAX_FORWARDED_CONNECTIONS) {
      socket.destroy();
      return;
    }
    const pipe: { socket: net.Socket; stream?: Duplex } = { socket };
    set.add(pipe);
    const fail = () => {
      socket.destroy();
      pipe.stream?.destroy();
    };
    socket.on("error", fail);
    // Both directions done (or reset): the stream goes too.
    socket.on("close", () => {
      set.delete(pipe);
      pipe.stream?.destroy();
    });
    this.connect(port).then(
      (stream) => {
        if (socket.destroyed) {
          stream.destroy();
          return;
        }
        pipe.stream = stream;
        stream.on("error", fail);
        // The guest side is gone: the host socket ends once what it sent is flushed.
        stream.on("close", () => socket.end());
        socket.pipe(stream);
        stream.pipe(socket);
        socket.resume();
      },
      () => socket.destroy(),
    );
  }
}
