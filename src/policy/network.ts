// The network grant: which URLs a sandbox's `fetch` may reach, which addresses it may connect to,
// the caps on each request, and the shape of the record kept of every attempt. The worker never
// gets network access; the host performs every request after checking its URL (and every
// redirect's) against `allow` with `checkUrl`, resolving the name on the host, and checking every
// address with `checkAddresses`. Matching rules, all exact:
//   entry    = [scheme "://"] host [":" port]
//   scheme   = "http" | "https"; absent: both
//   host     = a DNS name ("api.example.com", matched case-insensitively, exactly),
//            | "*." DNS name with at least two labels ("*.example.org": any name ending in
//              ".example.org", never "example.org" itself nor an IP address),
//            | an IPv4 address ("127.0.0.1") or a bracketed IPv6 address ("[::1]"), exactly
//   port     = 1..65535; absent: only the scheme's default port (80 for http, 443 for https; so
//              without a port an entry allows ports 80 and 443 only, each with its own scheme)
// Deny (`network.deny`, optional): entries of the same syntax that win over `allow`: a request a
// deny entry matches is refused whatever `allow` says, and the message names that entry. They
// match as allow entries do, except that what a deny entry leaves out it does not narrow: no scheme,
// both; no port, every port (so "evil.example" refuses evil.example:8080 too; a deny meant for
// one port names it). A deny entry that is an IP address also refuses a name resolving to that
// address (checkAddresses), so a denied address cannot be reached through an allowed name.
// A URL is checked after WHATWG parsing (the parse `fetch` itself does), so numeric host forms
// like `http://2130706433/` are compared as the address they denote ("127.0.0.1"). URLs with
// credentials (`user:pass@`) and schemes other than http/https are refused.
// Addresses (the host decides; the guest's resolver is never asked): a name that matched is
// resolved on the host (every address, the system's resolver), and each address must be public,
// or named. Public: what ipaddr.js calls "unicast" (IPv4-mapped, NAT64 and 6to4 IPv6 addresses are
// judged by the IPv4 address inside). Everything else is refused unless named: loopback, private
// (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), multicast,
// unspecified (0.0.0.0/8, ::), carrier-grade NAT (100.64/10), broadcast, documentation, benchmark
// and other reserved ranges, and the cloud metadata addresses (169.254.169.254, fd00:ec2::254, …),
// which lie in those ranges anyway. An address is named when an entry whose scheme and port fit the
// request (as for the URL) is that IP address (IPv4-mapped IPv6 compared as its IPv4 address), or
// when the entry is exactly "localhost", the request's host is "localhost" and the address is a
// loopback one. An IP literal URL is only ever let through by an entry naming it, so it always
// passes this check; a name passes only if every address it resolves to does, and the connection
// then goes to those addresses and no others (the broker pins them; no second lookup).
// Secrets (`network.secrets`, optional): credentials the guest uses without ever holding them.
// Each `{ name, value, hosts }` puts a placeholder, not the value, in the guest's environment
// variable `name`: "agentbox-secret-<name>-<32 hex digits>" (16 random bytes, new per sandbox).
// The host replaces the placeholder with the value in request header values and in the URL's
// query string (percent-encoded there), only on requests whose URL a `hosts` entry matches
// (entries and matching as for `allow`; each redirect hop is matched again), and turns the value
// back into the placeholder in what returns to the guest (response headers, body, final URL,
// error messages) and in the network log. A server that transforms the value (hashes, base64,
// quotes part of it) can still hand the guest something derived from it: give secrets only to
// hosts that do not. An `env` entry of the same name as a secret is refused (policy/secrets.ts).
import net from "node:net";
import ipaddr from "ipaddr.js";
import { z } from "zod";

const MiB = 1024 * 1024;

export interface AllowRule {
  scheme?: "http" | "https";
  /** Lowercase DNS name (without "*.") or IP address (IPv6 with brackets). */
  host: string;
  wildcard: boolean;
  port?: number;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

function isDnsName(h: string): boolean {
  if (h.length === 0 || h.length > 253) return false;
  const labels = h.split(".");
  // A name whose last label is numeric would be read as an IPv4 address by the URL parser.
  return labels.every((l) => LABEL.test(l)) && !/^[0-9]+$/.test(labels[labels.length - 1]!);
}

/** Parse one `network.allow` entry; a string saying what is wrong when it is malformed. */
export function parseAllowEntry(entry: string): AllowRule | string {
  const m = /^(?:(https?):\/\/)?(\*\.)?(\[[0-9a-fA-F:.]+\]|[^:/[\]]+)(?::([0-9]{1,5}))?$/.exec(entry);
  if (!m) return `${JSON.stringify(entry)} is not [http(s)://]host[:port] (no path, no user, no query)`;
  const [, scheme, star, rawHost, rawPort] = m;
  const host = rawHost!.toLowerCase();
  const rule: AllowRule = { host, wildcard: Boolean(star) };
  if (scheme) rule.scheme = scheme as "http" | "https";
  if (rawPort !== undefined) {
    const port = Number(rawPort);
    if (port < 1 || port > 65535) return `${JSON.stringify(entry)}: port must be 1..65535`;
    rule.port = port;
  }
  const ip = host.startsWith("[") ? net.isIPv6(host.slice(1, -1)) : net.isIPv4(host);
  if (ip) {
    if (star) return `${JSON.stringify(entry)}: "*." applies to DNS names, not addresses`;
    if (host.startsWith("[")) rule.host = `[${new URL(`http://${host}/`).hostname.slice(1, -1)}]`; // canonical form
    return rule;
  }
  if (!isDnsName(host)) return `${JSON.stringify(entry)}: ${JSON.stringify(host)} is not a DNS name or IP address`;
  if (star && !host.includes(".")) return `${JSON.stringify(entry)}: "*." needs a name with at least two labels (e.g. "*.example.org")`;
  return rule;
}

/** One entry, `[http(s)://]host[:port]` (network.allow, network.deny, an API key's allowNet). */
export const networkEntrySchema = z.string().superRefine((s, ctx) => {
  const r = parseAllowEntry(s);
  if (typeof r === "string") ctx.addIssue({ code: "custom", message: r });
});

/** One `network.secrets` entry; see the top of this file. `value` is never echoed or logged. */
export const secretSchema = z.strictObject({
  /** The guest's environment variable that holds the placeholder. */
  name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "environment variable names are [A-Za-z_][A-Za-z0-9_]*").max(128),
  /** The credential; it goes in header values, so no CR, LF or NUL. */
  value: z
    .string()
    .min(1)
    .max(8 * 1024)
    .refine((v) => !/[\r\n\0]/.test(v), "must not contain CR, LF or NUL"),
  /** Where the value may be sent: entries as in `allow`. */
  hosts: z.array(networkEntrySchema).min(1).max(64),
});

export type SecretGrant = z.output<typeof secretSchema>;

export const networkSchema = z.strictObject({
  /** Where `fetch` may go; see the matching rules at the top of this file. */
  allow: z.array(networkEntrySchema).min(1).max(256),
  /** Where it may not, whatever `allow` says: no port in an entry means every port. */
  deny: z.array(networkEntrySchema).max(256).default([]),
  /** Per request, from sending to the last byte of the body; never past the run's own deadline. */
  timeoutMs: z.int().min(1).max(600_000).default(10_000),
  /** Largest request body. */
  maxRequestBytes: z.int().min(0).max(64 * MiB).default(1 * MiB),
  /** Largest response body; a larger response fails with an error (never silently cut). */
  maxResponseBytes: z.int().min(1).max(64 * MiB).default(8 * MiB),
  /** Requests in flight at once; further ones wait. */
  maxConcurrent: z.int().min(1).max(64).default(4),
  /** Redirects followed per request, each checked against `allow`. 0: a redirect is returned as is. */
  maxRedirects: z.int().min(0).max(20).default(5),
  // The heavy tier's egress proxy: per connection (a CONNECT tunnel, or one proxied request).
  /** Heavy tier: connections the proxy holds open to the network at once; more are refused (503). */
  maxConnections: z.int().min(1).max(1024).default(32),
  /** Heavy tier: the longest a connection may last, from its check to its close. */
  connectionTimeoutMs: z.int().min(1).max(24 * 3600_000).default(600_000),
  /** Heavy tier: bytes one connection may receive from the network; past it the connection is cut. */
  maxConnectionBytesIn: z.int().min(1).max(64 * 1024 * MiB).default(2048 * MiB),
  /** Heavy tier: bytes one connection may send to the network; past it the connection is cut. */
  maxConnectionBytesOut: z.int().min(1).max(64 * 1024 * MiB).default(256 * MiB),
  /** Credentials the host adds to requests to their hosts; the guest sees placeholders only. */
  secrets: z
    .array(secretSchema)
    .max(32)
    .default([])
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((s, i) => {
        if (seen.has(s.name)) ctx.addIssue({ code: "custom", path: [i, "name"], message: `${JSON.stringify(s.name)} is the name of an earlier secret` });
        seen.add(s.name);
      });
    }),
});

export type NetworkGrantInput = z.input<typeof networkSchema>;
export type NetworkGrant = z.output<typeof networkSchema>;

export function parseAllowList(allow: readonly string[]): AllowRule[] {
  return allow.map((a) => {
    const r = parseAllowEntry(a);
    if (typeof r === "string") throw new Error(r);
    return r;
  });
}

/** Whether `rule` covers requests with `scheme` to `port` (no port in the entry: the scheme's default). */
function fits(rule: AllowRule, scheme: string, port: number): boolean {
  const defaultPort = scheme === "https" ? 443 : 80;
  return (rule.scheme === undefined || rule.scheme === scheme) && (rule.port === undefined ? port === defaultPort : port === rule.port);
}

/** Whether deny `rule` covers requests with `scheme` to `port`: what it leaves out, it does not narrow. */
function denies(rule: AllowRule, scheme: string, port: number): boolean {
  return (rule.scheme === undefined || rule.scheme === scheme) && (rule.port === undefined || rule.port === port);
}

/** Whether `rule`'s host matches the URL host `host` (exact, or "*." for names under it, never an IP). */
function hostMatches(rule: AllowRule, host: string): boolean {
  const isIp = host.startsWith("[") || net.isIPv4(host);
  return rule.wildcard ? !isIp && host.endsWith(`.${rule.host}`) : host === rule.host;
}

/** Whether `rule` matches a request to `url` as an allow entry would (host, scheme and port). */
export function ruleMatchesUrl(rule: AllowRule, url: URL): boolean {
  const { scheme, port } = schemeAndPort(url);
  return fits(rule, scheme, port) && hostMatches(rule, url.hostname);
}

/**
 * Whether the entry `asked` allows nothing `granted` does not (both parsed): the same host, or a
 * name (or "*." name) under a granted "*." name; and every (scheme, port) `asked` covers, `granted`
 * covers too (so "https://x" is within "x", "https://x:443" within "https://x", "x" not within
 * "https://x"). The server's rule for what a client may ask.
 */
export function withinRule(asked: AllowRule, granted: AllowRule): boolean {
  const pairs = (["http", "https"] as const).filter((sc) => asked.scheme === undefined || asked.scheme === sc).map((sc) => [sc, asked.port ?? (sc === "https" ? 443 : 80)] as const);
  if (!pairs.every(([sc, port]) => fits(granted, sc, port))) return false;
  if (!granted.wildcard) return !asked.wildcard && asked.host === granted.host;
  const isIp = asked.host.startsWith("[") || net.isIPv4(asked.host);
  return !isIp && (asked.host.endsWith(`.${granted.host}`) || (asked.wildcard && asked.host === granted.host));
}

/** A URL's scheme (without ":") and port (the scheme's default when it has none). */
export function schemeAndPort(url: URL): { scheme: string; port: number } {
  const scheme = url.protocol.slice(0, -1);
  return { scheme, port: url.port ? Number(url.port) : scheme === "https" ? 443 : 80 };
}

/**
 * Whether `raw` may be fetched under `rules` and `deny`: the parsed URL, or why not (naming host
 * and grant; `denied`: the deny entry that refused it). A deny entry wins over any allow entry.
 * `message` is for the guest; `reason`, for the log, never quotes the guest's raw string.
 */
export function checkUrl(raw: string, rules: readonly AllowRule[], deny: readonly AllowRule[] = []): { ok: true; url: URL } | { ok: false; message: string; reason?: string; denied?: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, message: `${JSON.stringify(raw.slice(0, 200))} is not an absolute URL`, reason: "not an absolute URL" };
  }
  const { scheme, port } = schemeAndPort(url);
  if (scheme !== "http" && scheme !== "https") return { ok: false, message: `scheme "${scheme}:" is not allowed (only http and https)` };
  if (url.username || url.password) return { ok: false, message: "URLs with credentials (user:password@) are not allowed" };
  const host = url.hostname;
  const refused = deny.find((r) => denies(r, scheme, port) && hostMatches(r, host));
  if (refused) {
    const entry = formatRule(refused);
    return { ok: false, message: `${scheme}://${host}:${port} is denied by network.deny entry "${entry}"`, denied: entry };
  }
  if (rules.some((r) => fits(r, scheme, port) && hostMatches(r, host))) return { ok: true, url };
  return { ok: false, message: `${scheme}://${host}:${port} is not in the sandbox's network grant (network.allow)` };
}

/** What kind of address an IP address is, for the address check. */
export type AddressKind = "public" | "loopback" | "private" | "linkLocal" | "multicast" | "unspecified" | "carrierGradeNat" | "metadata" | "reserved";

export interface AddressClass {
  kind: AddressKind;
  /** How a message names it: "a private address", "a loopback address (IPv4-mapped 127.0.0.1)". */
  description: string;
  /** The address as compared with entries: IPv4 dotted (also for IPv4-mapped IPv6), IPv6 compressed. */
  key: string;
}

/** Cloud instance metadata services (AWS, GCP, Azure, OpenStack; AWS IPv6; ECS tasks; Alibaba). */
const METADATA = new Set(["169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200"]);

const DESCRIPTIONS: Record<Exclude<AddressKind, "reserved" | "public">, string> = {
  loopback: "a loopback address",
  private: "a private address",
  linkLocal: "a link-local address",
  multicast: "a multicast address",
  unspecified: "an unspecified address",
  carrierGradeNat: "a carrier-grade NAT address (100.64.0.0/10)",
  metadata: "a cloud metadata address",
};

function classifyV4(a: ipaddr.IPv4): { kind: AddressKind; description: string } {
  if (METADATA.has(a.toString())) return { kind: "metadata", description: DESCRIPTIONS.metadata };
  const range = a.range() as string;
  switch (range) {
    case "unicast":
      return { kind: "public", description: "a public address" };
    case "loopback":
    case "private":
    case "linkLocal":
    case "multicast":
    case "unspecified":
    case "carrierGradeNat":
      return { kind: range, description: DESCRIPTIONS[range] };
    case "reserved":
      return { kind: "reserved", description: "a reserved address (documentation, benchmarking or future use)" };
    default: // broadcast, as112, amt, ...: not for a sandbox to reach unless named
      return { kind: "reserved", description: `a special-purpose address (${range})` };
  }
}

/**
 * Classify one IP address (no brackets). Only "public" addresses may be reached without an entry
 * naming them. Anything ipaddr.js cannot parse is "reserved".
 */
export function classifyAddress(address: string): AddressClass {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(address.includes("%") ? address.slice(0, address.indexOf("%")) : address);
  } catch {
    return { kind: "reserved", description: "not an IP address", key: address };
  }
  if (ip.kind() === "ipv4") return { ...classifyV4(ip as ipaddr.IPv4), key: ip.toString() };
  const v6 = ip as ipaddr.IPv6;
  const key = v6.toString();
  if (METADATA.has(key)) return { kind: "metadata", description: DESCRIPTIONS.metadata, key };
  const range = v6.range() as string;
  const p = v6.parts;
  // IPv6 forms that reach an IPv4 address are judged by it: mapped (::ffff:a.b.c.d), RFC 6145
  // (::ffff:0:a.b.c.d), NAT64 well-known prefix (64:ff9b::a.b.c.d), 6to4 (2002:aabb:ccdd::/48).
  let inner: ipaddr.IPv4 | undefined;
  if (range === "ipv4Mapped" || range === "rfc6145" || (range === "rfc6052" && p[2] === 0)) inner = new ipaddr.IPv4([p[6]! >> 8, p[6]! & 0xff, p[7]! >> 8, p[7]! & 0xff]);
  else if (range === "6to4") inner = new ipaddr.IPv4([p[1]! >> 8, p[1]! & 0xff, p[2]! >> 8, p[2]! & 0xff]);
  if (inner) {
    const c = classifyV4(inner);
    if (range === "ipv4Mapped") return { ...c, description: c.kind === "public" ? c.description : `${c.description} (IPv4-mapped ${inner.toString()})`, key: inner.toString() };
    return { ...c, description: c.kind === "public" ? c.description : `${c.description} (${inner.toString()} inside ${range})`, key };
  }
  switch (range) {
    case "unicast":
      // ::/16 holds IPv4-compatible (::a.b.c.d, deprecated) and other unassigned forms: not public.
      return p[0] === 0 ? { kind: "reserved", description: "a special-purpose address (::/16)", key } : { kind: "public", description: "a public address", key };
    case "loopback":
    case "linkLocal":
    case "multicast":
    case "unspecified":
      return { kind: range, description: DESCRIPTIONS[range], key };
    case "uniqueLocal":
      return { kind: "private", description: "a private address (unique local, fc00::/7)", key };
    default: // site-local, teredo, documentation, benchmarking, NAT64 local-use, ...
      return { kind: "reserved", description: `a special-purpose address (${range})`, key };
  }
}

/** An entry as text, canonical (what `parseAllowEntry` of it gives back). */
export function formatRule(r: AllowRule): string {
  return `${r.scheme ? `${r.scheme}://` : ""}${r.wildcard ? "*." : ""}${r.host}${r.port !== undefined ? `:${r.port}` : ""}`;
}

/** The entry that would name `address` for requests like `url`: `10.0.0.5`, `127.0.0.1:8080`, `[::1]:9000`. */
function entryFor(address: string, url: URL): string {
  const { port } = schemeAndPort(url);
  const host = net.isIPv6(address) ? `[${address}]` : address;
  return url.port ? `${host}:${port}` : host;
}

export type AddressDecision = { ok: true; reason: string } | { ok: false; reason: string };

/**
 * Whether a request to `url` (already let through by `checkUrl`) may connect to `addresses`, what
 * its host is or resolved to on the host: none may be an address a deny entry names, and each must
 * be public or named (see the top of this file). The reason says which, or which address was
 * refused and why: the deny entry, or the allow entry that would permit it.
 */
export function checkAddresses(url: URL, addresses: readonly string[], rules: readonly AllowRule[], deny: readonly AllowRule[] = []): AddressDecision {
  const { scheme, port } = schemeAndPort(url);
  const host = url.hostname;
  if (addresses.length === 0) return { ok: false, reason: `${host} has no address` };
  const isIp = (h: string) => h.startsWith("[") || net.isIPv4(h);
  const keyOf = (r: AllowRule) => classifyAddress(r.host.startsWith("[") ? r.host.slice(1, -1) : r.host).key;
  const denying = deny.filter((r) => isIp(r.host) && denies(r, scheme, port));
  const fitting = rules.filter((r) => !r.wildcard && fits(r, scheme, port));
  const reasons: string[] = [];
  for (const address of addresses) {
    const c = classifyAddress(address);
    const refused = denying.find((r) => keyOf(r) === c.key);
    if (refused) {
      const what = isIp(host) ? `${address} is` : `${host} resolves to ${address}, which is`;
      return { ok: false, reason: `${what} denied by network.deny entry "${formatRule(refused)}"` };
    }
    if (c.kind === "public") {
      reasons.push(`${address} is public`);
      continue;
    }
    const byAddress = fitting.find((r) => isIp(r.host) && keyOf(r) === c.key);
    if (byAddress) {
      reasons.push(`${address} is named in network.allow ("${formatRule(byAddress)}")`);
      continue;
    }
    const byLocalhost = c.kind === "loopback" && host === "localhost" ? fitting.find((r) => r.host === "localhost") : undefined;
    if (byLocalhost) {
      reasons.push(`${address} is loopback and network.allow names localhost ("${formatRule(byLocalhost)}")`);
      continue;
    }
    const what = isIp(host) ? `${address} is` : `${host} resolves to ${address},`;
    return { ok: false, reason: `${what} ${c.description}; add "${entryFor(c.key, url)}" to network.allow to permit it` };
  }
  return { ok: true, reason: reasons.join("; ") };
}

/** A URL as the log keeps it: scheme, host, port and path; no credentials, query or fragment. */
export function urlForLog(url: URL): string {
  const s = `${url.protocol}//${url.host}${url.pathname}`;
  return s.length > LOGGED_URL_CHARS ? `${s.slice(0, LOGGED_URL_CHARS)}…` : s;
}

const LOGGED_URL_CHARS = 2048;

/** Network requests a sandbox keeps a record of: the most recent ones. */
export const NETWORK_LOG_ENTRIES = 1000;

/**
 * One attempt by the guest to reach the network: a `fetch`, or one redirect hop of it (each hop
 * is checked and recorded on its own). No headers, bodies, credentials or query strings.
 */
export const networkLogEntrySchema = z.strictObject({
  /** When the attempt started (ISO 8601). */
  time: z.iso.datetime(),
  method: z.string(),
  /** scheme://host[:port]/path; host:port for a CONNECT tunnel (heavy tier); "" when the guest's URL did not parse. */
  url: z.string(),
  /** The URL's host ("" when it did not parse); IPv6 in brackets. */
  host: z.string(),
  port: z.int().nullable(),
  /** The address connected to (the one checked), or null when no connection was made. */
  address: z.string().nullable(),
  /** 0: the guest's request; n: its n-th redirect. */
  hop: z.int().min(0),
  /**
   * allowed: the grant let it through and a connection was attempted (`status`, or `error`, says
   * how it went); denied: the grant or a cap refused it and nothing was sent; error: the name
   * could not be resolved.
   */
  decision: z.enum(["allowed", "denied", "error"]),
  /** Why: the address kinds or entries that permitted it, or the rule that refused it. */
  reason: z.string(),
  /** The HTTP status of the response, when one came. */
  status: z.int().nullable(),
  /** Request body bytes sent. */
  bytesSent: z.int().min(0),
  /** Response body bytes received, as they came over the wire (before any content decoding). */
  bytesReceived: z.int().min(0),
  durationMs: z.number().min(0),
  /** What went wrong after an allowed decision: a refused connection, a timeout, a response over a cap. */
  error: z.string().optional(),
});

export type NetworkLogEntry = z.output<typeof networkLogEntrySchema>;
