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
