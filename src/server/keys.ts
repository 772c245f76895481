// API keys of the HTTP server: where they come from (a JSON file or an environment variable),
// the quotas and network grants each carries, and the constant-time check of a presented bearer token.
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";
import { networkEntrySchema } from "../policy/network.js";

/** Quotas of one key; defaults apply to keys that do not set them. */
export const quotaSchema = z.strictObject({
  /** Sandboxes the key may have alive at once. */
  maxSandboxes: z.int().min(0).max(10_000).default(10),
  /** Largest limits.memoryMb a sandbox of this key may ask for (also its default cap). */
  maxMemoryMb: z.int().min(48).max(4096).default(1024),
  /** Largest limits.timeoutMs (and per-run timeoutMs) this key may ask for. */
  maxRunMs: z.int().min(1).max(24 * 3600 * 1000).default(300_000),
  /** Largest limits.cpus (heavy tier: CPU quota) a sandbox of this key may ask for. */
  maxCpus: z.number().min(0.01).max(64).default(2),
  /** Largest limits.diskMb (heavy tier: each writable file system) a sandbox of this key may ask for. */
  maxDiskMb: z.int().min(1).max(64 * 1024).default(1024),
  /** Snapshots the key may keep at once (POST /sandboxes/{id}/snapshots; forks do not keep one). */
  maxSnapshots: z.int().min(0).max(10_000).default(16),
  /** What its snapshots may take together, MiB: disk for checkpoints and for snapshots in --state-dir, memory for nano histories kept in memory. */
  maxSnapshotMb: z.int().min(0).max(1024 * 1024).default(4096),
});

const keyEntrySchema = quotaSchema.extend({
  /** Shown in logs and metrics, never the key itself. */
  name: z.string().min(1).max(64).regex(/^[A-Za-z0-9_.@-]+$/, "names are [A-Za-z0-9_.@-]+"),
  /** The bearer token itself (at least 16 characters) ... */
  key: z.string().min(16).max(512).optional(),
  /** ... or its SHA-256 in hex, so the file need not hold the secret. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits").optional(),
  /**
   * `network.allow` entries this key's sandboxes may ask for, instead of the server's --allow-net
   * list ([]: no network for this key). Absent: the server's list.
   */
  allowNet: z.array(networkEntrySchema).max(256).optional(),
}).refine((k) => (k.key === undefined) !== (k.sha256 === undefined), "give exactly one of key or sha256");

export const keyFileSchema = z.strictObject({ keys: z.array(keyEntrySchema).max(10_000) });

export type Quota = z.output<typeof quotaSchema>;

/** Who a request acts for. Sandboxes belong to exactly one principal. */
export interface Principal {
  name: string;
  quota: Quota;
  /** The key's own network grant (allowNet), replacing the server's; absent: the server's. */
  allowNet?: readonly string[];
}

interface StoredKey extends Principal {
  digest: Buffer;
}

/** The key set; `open` is the no-keys mode (loopback only), where every request is "anonymous". */
export class KeyRing {
  private constructor(
    private readonly keys: StoredKey[],
    readonly open: boolean,
  ) {}

  static fromEntries(entries: z.input<typeof keyFileSchema>["keys"]): KeyRing {
    const parsed = keyFileSchema.parse({ keys: entries }).keys;
    const names = new Set<string>();
    const keys = parsed.map((k) => {
      if (names.has(k.name)) throw new Error(`API keys: name ${JSON.stringify(k.name)} appears twice`);
      names.add(k.name);
      const digest = k.key !== undefined ? sha256(k.key) : Buffer.from(k.sha256!, "hex");
      const quota = { maxSandboxes: k.maxSandboxes, maxMemoryMb: k.maxMemoryMb, maxRunMs: k.maxRunMs, maxCpus: k.maxCpus, maxDiskMb: k.maxDiskMb, maxSnapshots: k.maxSnapshots, maxSnapshotMb: k.maxSnapshotMb };
      return { name: k.name, quota, ...(k.allowNet ? { allowNet: k.allowNet } : {}), digest };
    });
    return new KeyRing(keys, keys.length === 0);
  }

  /** No keys: every request is the anonymous principal with default quotas. */
  static none(): KeyRing {
    return new KeyRing([], true);
  }

  get size(): number {
    return this.keys.length;
  }

  /**
   * The principal a bearer token belongs to. Every stored digest is compared (no early exit),
   * each with timingSafeEqual over fixed-length SHA-256 digests, so timing says nothing about
   * how much of a key matched or which key it was.
   */
  authenticate(token: string | undefined): Principal | undefined {
    if (this.open) return ANONYMOUS;
    if (token === undefined) return undefined;
    const d = sha256(token);
    let found: StoredKey | undefined;
    for (const k of this.keys) {
      if (timingSafeEqual(d, k.digest) && found === undefined) found = k;
    }
    return found && { name: found.name, quota: found.quota, ...(found.allowNet ? { allowNet: found.allowNet } : {}) };
  }
}

/** The token of an `Authorization: Bearer <token>` header, or undefined for anything else. */
export function bearerToken(header: string | undefined): string | undefined {
  return header === undefined ? undefined : /^Bearer[ ]+(\S+)\s*$/i.exec(header)?.[1];
}

/** The key of an E2B control-plane request: E2B's SDKs send X-API-KEY; a Bearer token works too. */
export function e2bApiKey(xApiKey: string | undefined, authorization: string | undefined): string | undefined {
  return xApiKey ?? bearerToken(authorization);
}

const ANONYMOUS: Principal = { name: "anonymous", quota: quotaSchema.parse({}) };

function sha256(s: string): Buffer {
  return createHash("sha256").update(s, "utf8").digest();
}

/**
 * Keys from (in order) a file, `AGENTBOX_API_KEYS_FILE`, or `AGENTBOX_API_KEYS`. The file and the
 * file variable hold JSON `{ "keys": [...] }`; `AGENTBOX_API_KEYS` holds the same JSON or a
 * comma-separated list of bare keys (named key1, key2, ... with default quotas).
 */
export function loadKeys(file: string | undefined, env: NodeJS.ProcessEnv = process.env): KeyRing {
  const path = file ?? env.AGENTBOX_API_KEYS_FILE;
  if (path) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (e) {
      throw new Error(`cannot read API key file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return parseKeyJson(text, path);
  }
  const inline = env.AGENTBOX_API_KEYS?.trim();
  if (!inline) return KeyRing.none();
  if (inline.startsWith("{")) return parseKeyJson(inline, "AGENTBOX_API_KEYS");
  const bare = inline.split(",").map((s) => s.trim()).filter(Boolean);
  return KeyRing.fromEntries(bare.map((key, i) => ({ name: `key${i + 1}`, key })));
}

function parseKeyJson(text: string, where: string): KeyRing {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`API keys in ${where}: not valid JSON (${(e as Error).message})`);
  }
  const r = keyFileSchema.safeParse(json);
  if (!r.success) {
    throw new Error(`API keys in ${where}: ${r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`);
  }
  return KeyRing.fromEntries(r.data.keys);
}
