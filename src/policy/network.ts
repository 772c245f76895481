// The network grant: which URLs a sandbox's `fetch` may reach, and the caps on each request.
// The worker never gets network access; the host performs every request after checking its URL
// (and every redirect's) against `allow` with `checkUrl`. Matching rules, all exact:
//   entry    = [scheme "://"] host [":" port]
//   scheme   = "http" | "https"; absent: both
//   host     = a DNS name ("api.example.com", matched case-insensitively, exactly),
//            | "*." DNS name with at least two labels ("*.example.org": any name ending in
//              ".example.org", never "example.org" itself nor an IP address),
//            | an IPv4 address ("127.0.0.1") or a bracketed IPv6 address ("[::1]"), exactly
//   port     = 1..65535; absent: only the scheme's default port (80 for http, 443 for https)
// A URL is checked after WHATWG parsing (the parse `fetch` itself does), so numeric host forms
// like `http://2130706433/` are compared as the address they denote ("127.0.0.1"). URLs with
// credentials (`user:pass@`) and schemes other than http/https are refused. Names are matched as
// names: what a DNS name resolves to is up to DNS.
import net from "node:net";
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

const allowEntry = z.string().superRefine((s, ctx) => {
  const r = parseAllowEntry(s);
  if (typeof r === "string") ctx.addIssue({ code: "custom", message: r });
});

export const networkSchema = z.strictObject({
  /** Where `fetch` may go; see the matching rules at the top of this file. */
  allow: z.array(allowEntry).min(1).max(256),
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

/** Whether `raw` may be fetched under `rules`: the parsed URL, or why not (naming host and grant). */
export function checkUrl(raw: string, rules: readonly AllowRule[]): { ok: true; url: URL } | { ok: false; message: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, message: `${JSON.stringify(raw.slice(0, 200))} is not an absolute URL` };
  }
  const scheme = url.protocol.slice(0, -1);
  if (scheme !== "http" && scheme !== "https") return { ok: false, message: `scheme "${scheme}:" is not allowed (only http and https)` };
  if (url.username || url.password) return { ok: false, message: "URLs with credentials (user:password@) are not allowed" };
  const host = url.hostname;
  const defaultPort = scheme === "https" ? 443 : 80;
  const port = url.port ? Number(url.port) : defaultPort;
  const isIp = host.startsWith("[") || net.isIPv4(host);
  const hit = rules.some(
    (r) =>
      (r.scheme === undefined || r.scheme === scheme) &&
      (r.port === undefined ? port === defaultPort : port === r.port) &&
      (r.wildcard ? !isIp && host.endsWith(`.${r.host}`) : host === r.host),
  );
  if (hit) return { ok: true, url };
  return { ok: false, message: `${scheme}://${host}:${port} is not in the sandbox's network grant (network.allow)` };
}
