// Network secrets (`network.secrets`): credentials a guest uses without ever holding them. The
// guest's environment has a placeholder per secret; whatever carries the guest's requests out (the
// nano tier's fetch broker; the heavy tier's egress proxy) asks a SecretSet which secrets a URL
// may receive, puts their values in place of their placeholders in header values and the query
// string, and scrubs every value back into its placeholder in all that goes back to the guest or
// into a record: response headers and body, the final URL, error messages, log entries. The rules
// (placeholder format, where values go) are at the top of policy/network.ts.
import crypto from "node:crypto";
import { Transform } from "node:stream";
import { InvalidOptionsError } from "../errors.js";
import { parseAllowList, ruleMatchesUrl, type AllowRule, type SecretGrant } from "./network.js";

/** What every placeholder starts with; the rest is "<name>-<32 hex digits>". */
export const PLACEHOLDER_PREFIX = "agentbox-secret-";

/**
 * A fresh placeholder for the secret `name`: unguessable (16 random bytes) so a guest cannot
 * name another sandbox's secret, and made only of [A-Za-z0-9_-], so it reads the same in a
 * header, a query string (unescaped by URL parsing) and JSON.
 */
export function makePlaceholder(name: string): string {
  return `${PLACEHOLDER_PREFIX}${name}-${crypto.randomBytes(16).toString("hex")}`;
}

export interface Secret {
  readonly name: string;
  readonly placeholder: string;
  readonly value: string;
  /** The parsed `hosts` entries: the URLs that may receive the value. */
  readonly hosts: readonly AllowRule[];
}

/** A header as the broker and the proxy keep them: name, value. */
export type HeaderPair = [name: string, value: string];

export class SecretSet {
  readonly secrets: readonly Secret[];
  /** One pattern over every form of every value (longest first), or none without secrets. */
  private readonly pattern: RegExp | undefined;
  /** The same over the forms' UTF-8 bytes read as latin1, for bodies (byte-exact). */
  private readonly bytePattern: RegExp | undefined;
  /** Each form (as text and as latin1 bytes) → the placeholder it scrubs to. */
  private readonly placeholderOf = new Map<string, string>();
  private readonly byteForms: Buffer[] = [];

  /** `placeholderFor` only for tests that need fixed placeholders. */
  constructor(grants: readonly SecretGrant[] = [], placeholderFor: (name: string) => string = makePlaceholder) {
    this.secrets = grants.map((g) => Object.freeze({ name: g.name, value: g.value, placeholder: placeholderFor(g.name), hosts: Object.freeze(parseAllowList(g.hosts)) }));
    // A server may hand the value back as it got it, percent-encoded (as encodeURIComponent does,
    // or strictly as RFC 3986 and Python's quote do, or with "+" for spaces in form encoding) or
    // escaped inside JSON: each form scrubs to the placeholder (itself the same in all of them).
    const forms: string[] = [];
    for (const s of this.secrets) {
      const json = JSON.stringify(s.value).slice(1, -1);
      const form = new URLSearchParams({ v: s.value }).toString().slice(2);
      const strict = encodeURIComponent(s.value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
      for (const f of new Set([s.value, encodeURIComponent(s.value), strict, form, json])) {
        if (this.placeholderOf.has(f)) continue;
        this.placeholderOf.set(f, s.placeholder);
        this.placeholderOf.set(Buffer.from(f).toString("latin1"), s.placeholder);
        forms.push(f);
      }
    }
    // Longest first, so a value that contains another is scrubbed whole.
    forms.sort((a, b) => b.length - a.length);
    if (forms.length > 0) {
      this.pattern = new RegExp(forms.map(escapeRegExp).join("|"), "g");
      const bytes = forms.map((f) => Buffer.from(f));
      this.byteForms.push(...bytes);
      this.bytePattern = new RegExp(bytes.map((b) => escapeRegExp(b.toString("latin1"))).join("|"), "g");
    }
  }

  get size(): number {
    return this.secrets.length;
  }

  /** The guest's environment additions: each secret's name → its placeholder. */
  placeholders(): Record<string, string> {
    return Object.fromEntries(this.secrets.map((s) => [s.name, s.placeholder]));
  }

  /** The secrets a request to `url` may carry: those with a `hosts` entry matching it. */
  forUrl(url: URL): Secret[] {
    return this.secrets.filter((s) => s.hosts.some((r) => ruleMatchesUrl(r, url)));
  }

  /**
   * What to send for a request to `url` with `headers` (both as the guest wrote them): the values
   * of the secrets `url` may receive in place of their placeholders, in header values and in the
   * query string (percent-encoded). Placeholders of other secrets are sent as they are.
   */
  substitute(headers: readonly HeaderPair[], url: URL): { headers: HeaderPair[]; url: URL } {
    const secrets = this.forUrl(url);
    const out = new URL(url.href);
    if (secrets.length === 0) return { headers: headers.map(([k, v]) => [k, v]), url: out };
    const inHeader = (v: string) => secrets.reduce((acc, s) => acc.replaceAll(s.placeholder, s.value), v);
    // The query as it goes on the wire; the parser leaves a placeholder's characters as they are.
    if (out.search) out.search = secrets.reduce((acc, s) => acc.replaceAll(s.placeholder, encodeURIComponent(s.value)), out.search);
    return { headers: headers.map(([k, v]) => [k, inHeader(v)]), url: out };
  }

  /** `text` with every secret's value (in any of the forms above) replaced by its placeholder. */
  scrub(text: string): string;
  scrub(bytes: Buffer): Buffer;
  scrub(data: string | Buffer): string | Buffer {
    if (typeof data === "string") return this.pattern ? data.replace(this.pattern, (m) => this.placeholderOf.get(m) ?? m) : data;
    if (!this.bytePattern || !this.byteForms.some((f) => data.includes(f))) return data;
    // latin1 maps bytes 1:1 to characters, so the replacement is byte-exact for any body.
    return Buffer.from(
      data.toString("latin1").replace(this.bytePattern, (m) => this.placeholderOf.get(m) ?? m),
      "latin1",
    );
  }
}

/**
 * A stream that scrubs `set`'s values out of a body as it passes (the heavy tier's proxy streams
 * responses): it holds back the last bytes of each chunk that could begin a value the next chunk
 * completes, so a value split across chunks is scrubbed too.
 */
export function scrubbingStream(set: SecretSet): Transform {
  const keep = Math.max(0, ...set.secrets.flatMap((s) => [Buffer.byteLength(s.value), Buffer.byteLength(encodeURIComponent(s.value)), Buffer.byteLength(JSON.stringify(s.value))])) * 3;
  let carry: Buffer = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _enc, callback) {
      const scrubbed = set.scrub(carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk);
      if (scrubbed.length <= keep) {
        carry = scrubbed;
        return callback();
      }
      carry = Buffer.from(scrubbed.subarray(scrubbed.length - keep));
      callback(null, scrubbed.subarray(0, scrubbed.length - keep));
    },
    flush(callback) {
      callback(null, carry);
    },
  });
}

/**
 * Refuse an `env` entry named like a secret: the guest would see the placeholder, not the value
 * the caller set, and silently dropping either would surprise someone.
 */
export function checkSecretNames(env: Readonly<Record<string, string>>, secrets: readonly SecretGrant[] | undefined): void {
  const issues = (secrets ?? []).flatMap((s, i) =>
    Object.hasOwn(env, s.name) ? [{ path: `env.${s.name}`, message: `is also the name of network.secrets.${i} (the guest gets that secret's placeholder in it); drop one` }] : [],
  );
  if (issues.length > 0) throw new InvalidOptionsError(issues);
}

/** Options as they may be shown: every `network.secrets` value replaced by "***". */
export function redactSecrets<T>(options: T): T {
  const o = options as { network?: { secrets?: readonly SecretGrant[] } };
  if (!o.network?.secrets?.length) return options;
  return { ...options, network: { ...o.network, secrets: o.network.secrets.map((s) => ({ ...s, value: "***" })) } } as T;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
