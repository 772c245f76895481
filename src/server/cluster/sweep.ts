// What a node that left the cluster leaves behind. When its lease ends, its running sandboxes
// answer 410 (their records still name it) — for a while, not forever: the first node to see it
// gone marks it `gone/<node>` (a create-if-absent transaction, so the time is set once, whoever
// sees it first), and once the retention (`serve --gone-retention`, default 1 h) has passed since
// then, any node removes the records that can never be served again: its running sandboxes and
// its paused ones not on the shared state directory (then 404), its snapshots not on the shared
// directory. Each removal compares the record's mod_revision with the one read, so a record
// another node has just taken over (a paused sandbox adopted) is never removed. Records on the
// shared directory stay: another node takes them over when asked. A node that comes back under
// the same id drops its own stale records when it joins (store.ts, dropStale). Every node sweeps;
// the transactions make doing the same work twice harmless.
import type { ClusterStore } from "./store.js";
import { SWEEP_DEFAULTS } from "../defaults.js";

export { SWEEP_DEFAULTS };

export interface SweepOptions {
  /** How long a gone node's sandboxes answer 410 before their records are removed. */
  retentionMs: number;
  log: (line: string) => void;
}

export class GoneSweeper {
  private timer: NodeJS.Timeout | undefined;
  private off: (() => void) | undefined;
  private ticks = 0;
  private running = false;

  constructor(
    private readonly store: ClusterStore,
    private readonly o: SweepOptions,
  ) {}

  /** Mark nodes as they leave; look for expired marks every quarter of the retention (0.5-5 s). */
  start(): void {
    this.off = this.store.onNodeLeft((id) => {
      this.store.markGone(id, Date.now()).then(
        (marked) => marked && this.o.log(`cluster: node ${id} marked gone; its running sandboxes answer 410 for ${Math.round(this.o.retentionMs / 1000)} s, then 404`),
        () => undefined, // the periodic sweep marks it when etcd answers
      );
    });
    const every = Math.min(5000, Math.max(500, this.o.retentionMs / 4));
    this.timer = setInterval(() => void this.tick().catch(() => undefined), every);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.off?.();
  }

  /**
   * One sweep: records that name a node that is neither live nor marked get it marked (a node
   * that died while no other node watched); an expired mark's unservable records are removed, and
   * the mark too once nothing names that node any more. The whole catalog is read when a mark has
   * expired, and otherwise every 12th sweep (to find unmarked orphans).
   */
  async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const store = this.store;
      const now = Date.now();
      const live = (node: string) => node === store.nodeId || store.node(node) !== undefined;
      const marks = await store.goneMarks();
      // A node marked gone that is back (it rejoined after being cut off): not gone, its mark goes
      // (else, should it die later, the old mark's time would cut its retention short).
      for (const m of marks) if (live(m.value.node)) await store.unmarkGone(m.value.node, m.modRevision);
      const expired = marks.filter((m) => !live(m.value.node) && now - m.value.since >= this.o.retentionMs);
      if (expired.length === 0 && this.ticks++ % 12 !== 0) return;
      const [sandboxes, snapshots] = await Promise.all([store.sandboxEntries(), store.snapshotEntries()]);
      const marked = new Set(marks.filter((m) => !live(m.value.node)).map((m) => m.value.node));
      for (const node of new Set([...sandboxes, ...snapshots].map((e) => e.value.node))) {
        if (!live(node) && !marked.has(node) && (await store.nodeAlive(node)) === false) await store.markGone(node, now);
      }
      for (const m of expired) {
        const node = m.value.node;
        let removed = 0;
        let left = 0;
        for (const e of sandboxes) {
          if (e.value.node !== node) continue;
          if (e.value.state === "paused" && e.value.persisted) left++;
          else if (await store.dropSandbox(e)) removed++;
        }
        for (const e of snapshots) {
          if (e.value.node !== node) continue;
          if (e.value.persisted) left++;
          else if (await store.dropSnapshot(e)) removed++;
        }
        if (removed > 0) this.o.log(`cluster: removed ${removed} records of node ${node}, gone for over ${Math.round(this.o.retentionMs / 1000)} s`);
        if (left === 0) await store.unmarkGone(node, m.modRevision);
      }
    } finally {
      this.running = false;
    }
  }
}
