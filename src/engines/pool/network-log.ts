// The record a sandbox keeps of its guest's network attempts: the last NETWORK_LOG_ENTRIES of them
// in a ring (older ones fall off), and listeners told of each as it is recorded (the server's
// metrics). Entries are frozen: readers get the same objects, never a way to change the record.
import { NETWORK_LOG_ENTRIES, type NetworkLogEntry } from "../../policy/network.js";

export class NetworkLog {
  private readonly ring: NetworkLogEntry[] = [];
  /** Where the oldest entry is once the ring is full (the next one to be replaced). */
  private oldest = 0;
  private readonly listeners = new Set<(entry: NetworkLogEntry) => void>();

  constructor(private readonly capacity = NETWORK_LOG_ENTRIES) {}

  add(entry: NetworkLogEntry): void {
    const e = Object.freeze({ ...entry });
    if (this.ring.length < this.capacity) this.ring.push(e);
    else {
      this.ring[this.oldest] = e;
      this.oldest = (this.oldest + 1) % this.capacity;
    }
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // A listener's failure is its own; the record and the request go on.
      }
    }
  }

  /** The entries kept, oldest first (a new array each call). */
  entries(): NetworkLogEntry[] {
    return [...this.ring.slice(this.oldest), ...this.ring.slice(0, this.oldest)];
  }

  /** Forget every entry (a restored sandbox's record starts empty: its replay's requests are not its own). */
  clear(): void {
    this.ring.length = 0;
    this.oldest = 0;
  }

  /** Call `listener` with each entry from now on; returns the function that stops it. */
  watch(listener: (entry: NetworkLogEntry) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }
}

/**
 * One attempt to reach the network, from its check to its end, recorded in `log` exactly once
 * (the first record() wins) with its duration. The nano broker records one per request hop, the
 * heavy tier's egress proxy one per connection or proxied request; `scrub` cleans what could quote
 * a secret's value (reasons, errors).
 */
export class LoggedAttempt {
  private readonly time = new Date().toISOString();
  private readonly t0 = performance.now();
  private recorded = false;
  address: string | null = null;
  status: number | null = null;
  bytesSent = 0;
  bytesReceived = 0;

  constructor(
    private readonly log: NetworkLog,
    private readonly method: string,
    private readonly target: Pick<NetworkLogEntry, "url" | "host" | "port">,
    private readonly hop = 0,
    private readonly scrub: (text: string) => string = (text) => text,
  ) {}

  record(decision: NetworkLogEntry["decision"], reason: string, error?: string): void {
    if (this.recorded) return;
    this.recorded = true;
    const e: NetworkLogEntry = {
      time: this.time,
      method: this.method,
      ...this.target,
      address: this.address,
      hop: this.hop,
      decision,
      reason: this.scrub(reason),
      status: this.status,
      bytesSent: this.bytesSent,
      bytesReceived: this.bytesReceived,
      durationMs: Math.round((performance.now() - this.t0) * 10) / 10,
    };
    if (error !== undefined) e.error = this.scrub(error);
    this.log.add(e);
  }
}

/** What a record of attempts offers its readers (a NetworkLog, an engine's network record). */
export type NetworkRecord = Pick<NetworkLog, "entries" | "watch">;

/**
 * One record across the engines a sandbox runs on in turn (tier auto's move to the heavy tier, a
 * resume after a pause): the earlier engines' attempts are kept before the current one's, and
 * watchers follow each switch.
 */
export class CarriedNetworkLog implements NetworkRecord {
  private earlier: NetworkLogEntry[] = [];
  private current: NetworkRecord | undefined;
  private unwatch: (() => void) | undefined;
  private readonly listeners = new Set<(entry: NetworkLogEntry) => void>();

  constructor(first: NetworkRecord | undefined) {
    this.follow(first);
  }

  /** No engine so far had a network record. */
  get empty(): boolean {
    return this.current === undefined && this.earlier.length === 0;
  }

  /** From now on `next`'s attempts; the current engine's are kept before them. */
  switchTo(next: NetworkRecord | undefined): void {
    this.earlier = this.entries();
    this.follow(next);
  }

  entries(): NetworkLogEntry[] {
    return [...this.earlier, ...(this.current?.entries() ?? [])].slice(-NETWORK_LOG_ENTRIES);
  }

  watch(listener: (entry: NetworkLogEntry) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  private follow(next: NetworkRecord | undefined): void {
    this.unwatch?.();
    this.current = next;
    this.unwatch = next?.watch((e) => {
      for (const l of this.listeners) {
        try {
          l(e);
        } catch {
          // A listener's failure is its own.
        }
      }
    });
  }
}

