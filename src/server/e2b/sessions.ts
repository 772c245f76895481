// What the E2B-compatible surface keeps about a sandbox beside the registry's entry: the access
// token its in-sandbox traffic must carry, the template it was made from, its metadata, and its
// E2B lifetime (an absolute end, moved by setTimeout, unlike the native idle timer). A sandbox the
// native API created gets a session the first time an E2B client connects to it.
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Principal } from "../keys.js";
import type { Entry, SandboxRegistry } from "../registry.js";

/** The envd version announced to the SDKs; it gates which SDK features they use (octet-stream upload: 0.5.7). */
export const ENVD_VERSION = "0.5.7";

/** E2B's longest sandbox lifetime (24 h). */
export const MAX_LIFETIME_MS = 24 * 3600_000;

export interface E2bSession {
  readonly id: string;
  readonly owner: string;
  /** The key that owns it (its quotas apply to the sandbox's traffic). */
  readonly who: Principal;
  /** The token of `X-Access-Token` (envdAccessToken): 128 random bits, hex. */
  readonly token: string;
  readonly templateId: string;
  readonly metadata: Readonly<Record<string, string>>;
  startedAt: number;
  /** When the lifetime ends (then `onTimeout` acts). */
  endAt: number;
  onTimeout: "kill" | "pause";
  timer?: NodeJS.Timeout | undefined;
}

/** The template name a sandbox the native API made shows under. */
export function templateOfEntry(e: Entry): string {
  const o = e.sandbox.options;
  if (o.tier === "nano") return o.language === "python" ? "agentbox-python" : "agentbox-javascript";
  if (o.tier === "heavy") return o.image === "data" ? "code-interpreter-v1" : "base";
  return "agentbox-auto";
}

export class E2bSessions {
  private readonly byId = new Map<string, E2bSession>();

  constructor(
    private readonly registry: SandboxRegistry,
    private readonly log: (line: string) => void,
  ) {}

  /** The session of sandbox `id` whose entry still exists, with that entry. */
  find(id: string): { session: E2bSession; entry: Entry } | undefined {
    const session = this.byId.get(id);
    if (!session) return undefined;
    const entry = this.registry.get(session.owner, id);
    if (!entry) {
      this.drop(id);
      return undefined;
    }
    return { session, entry };
  }

  /** The session of `entry`, made now (a new token, the native template name) if it has none. */
  ensure(entry: Entry, who: Principal, init?: { templateId: string; metadata: Record<string, string>; lifetimeMs: number; onTimeout: "kill" | "pause" }): E2bSession {
    const had = this.byId.get(entry.id);
    if (had) return had;
    const now = Date.now();
    const s: E2bSession = {
      id: entry.id,
      owner: entry.owner,
      who,
      token: randomBytes(16).toString("hex"),
      templateId: init?.templateId ?? templateOfEntry(entry),
      metadata: init?.metadata ?? {},
      startedAt: entry.createdAt,
      endAt: now + (init?.lifetimeMs ?? entry.idleTimeoutMs),
      onTimeout: init?.onTimeout ?? (entry.idleAction === "pause" ? "pause" : "kill"),
    };
    this.byId.set(entry.id, s);
    this.arm(s);
    return s;
  }

  /** Whether `token` is the session's (constant time). */
  static tokenMatches(s: E2bSession, token: string | undefined): boolean {
    if (token === undefined) return false;
    const a = Buffer.from(token, "utf8");
    const b = Buffer.from(s.token, "utf8");
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /** A new lifetime from now (setTimeout, connect with a timeout). */
  extend(s: E2bSession, lifetimeMs: number): void {
    s.endAt = Date.now() + lifetimeMs;
    const found = this.find(s.id);
    if (found && !found.entry.paused) this.registry.touch(found.entry, Math.max(1000, Math.min(lifetimeMs, MAX_LIFETIME_MS)));
    this.arm(s);
  }

  drop(id: string): void {
    const s = this.byId.get(id);
    if (s?.timer) clearTimeout(s.timer);
    this.byId.delete(id);
  }

  /** Every live session (its sandbox's traffic may sign URLs with its token). */
  all(): E2bSession[] {
    return [...this.byId.keys()].flatMap((id) => this.find(id)?.session ?? []);
  }

  closeAll(): void {
    for (const id of [...this.byId.keys()]) this.drop(id);
  }

  /** At endAt: pause (kept, resumed by the next request or connect) or kill, as the sandbox asked. */
  private arm(s: E2bSession): void {
    if (s.timer) clearTimeout(s.timer);
    s.timer = setTimeout(() => void this.expire(s.id), Math.max(0, s.endAt - Date.now()));
    s.timer.unref();
  }

  private async expire(id: string): Promise<void> {
    const f = this.find(id);
    if (!f) return;
    if (Date.now() < f.session.endAt) return this.arm(f.session);
    try {
      if (f.session.onTimeout === "pause" && !f.entry.paused) await this.registry.pause(f.entry);
      else if (f.session.onTimeout === "kill") {
        this.drop(id);
        await this.registry.remove(f.entry);
      }
    } catch (e) {
      this.log(`e2b: sandbox ${id}: at the end of its lifetime: ${(e as Error).message}`);
      this.drop(id);
      await this.registry.remove(f.entry).catch(() => undefined);
    }
  }
}
