// Network secrets on the host: placeholders, which URLs get a value (hosts matched as allow
// entries are), substitution in header values and the query string only, scrubbing of every form
// a server may hand the value back in; then the fetch broker driven directly (no worker) against
// loopback servers: values reach the secret's hosts only (redirects re-checked), and no answer,
// error or log entry carries one.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { InvalidOptionsError } from "../../src/errors.js";
import { FetchBroker, type Resolver } from "../../src/engines/pool/fetch-broker.js";
import { networkSchema, type NetworkGrantInput } from "../../src/policy/network.js";
import { checkSecretNames, makePlaceholder, PLACEHOLDER_PREFIX, redactSecrets, SecretSet } from "../../src/policy/secrets.js";
import type { FetchResult } from "../../src/protocol/messages.js";
import { Sandbox } from "../../src/index.js";

const VALUE = "s3cr3t/val+ue&x=1 \"q\" it's";
const fixed = (name: string) => `${PLACEHOLDER_PREFIX}${name}-00000000000000000000000000000000`;
const P = fixed("TOKEN");

describe("secrets: placeholders and options", () => {
  it("a placeholder names the secret and 16 random bytes, fresh each time", () => {
    const a = makePlaceholder("API_KEY");
    assert.match(a, /^agentbox-secret-API_KEY-[0-9a-f]{32}$/);
    assert.notEqual(a, makePlaceholder("API_KEY"));
    const set = new SecretSet([{ name: "API_KEY", value: "v", hosts: ["api.example.com"] }]);
    assert.deepEqual(Object.keys(set.placeholders()), ["API_KEY"]);
    assert.match(set.placeholders().API_KEY!, /^agentbox-secret-API_KEY-[0-9a-f]{32}$/);
  });

  it("the schema: env-var names, non-empty values of at most 8 KiB without CR/LF/NUL, host entries, unique names; errors never quote the value", () => {
    const ok = networkSchema.parse({ allow: ["a.example"], secrets: [{ name: "T", value: "x", hosts: ["a.example", "https://*.b.example:8443"] }] });
    assert.equal(ok.secrets.length, 1);
    assert.deepEqual(networkSchema.parse({ allow: ["a.example"] }).secrets, []);
    const bad: unknown[] = [
      { name: "1T", value: "x", hosts: ["a.example"] },
      { name: "T", value: "", hosts: ["a.example"] },
      { name: "T", value: "x".repeat(8193), hosts: ["a.example"] },
      { name: "T", value: "line\r\nX-Injected: 1", hosts: ["a.example"] },
      { name: "T", value: "x", hosts: [] },
      { name: "T", value: "x", hosts: ["a.example/path"] },
      { name: "T", value: "x", hosts: ["a.example"], extra: 1 },
    ];
    for (const s of bad) assert.equal(networkSchema.safeParse({ allow: ["a.example"], secrets: [s] }).success, false, JSON.stringify(s).slice(0, 80));
    const dup = networkSchema.safeParse({ allow: ["a.example"], secrets: [{ name: "T", value: "a", hosts: ["a.example"] }, { name: "T", value: "b", hosts: ["a.example"] }] });
    assert.equal(dup.success, false);
    assert.match(JSON.stringify(dup.error!.issues), /earlier secret/);
    const tooMany = Array.from({ length: 33 }, (_, i) => ({ name: `T${i}`, value: "v", hosts: ["a.example"] }));
    assert.equal(networkSchema.safeParse({ allow: ["a.example"], secrets: tooMany }).success, false);
    const injected = networkSchema.safeParse({ allow: ["a.example"], secrets: [{ name: "T", value: "SECRET-VALUE\n", hosts: ["a.example"] }] });
    assert.doesNotMatch(JSON.stringify(injected.error!.issues), /SECRET-VALUE/);
  });

  it("an env entry named like a secret is refused, naming both", () => {
    const secrets = [{ name: "TOKEN", value: "v", hosts: ["a.example"] }];
    assert.doesNotThrow(() => checkSecretNames({ OTHER: "1" }, secrets));
    assert.throws(
      () => checkSecretNames({ TOKEN: "mine" }, secrets),
      (e: unknown) => e instanceof InvalidOptionsError && e.issues[0]!.path === "env.TOKEN" && /network\.secrets\.0/.test(e.message),
    );
  });

  it("redactSecrets shows values as ***, leaves everything else", () => {
    const o = { tier: "nano", network: { allow: ["a"], secrets: [{ name: "T", value: "v", hosts: ["a"] }] } };
    assert.deepEqual(redactSecrets(o), { tier: "nano", network: { allow: ["a"], secrets: [{ name: "T", value: "***", hosts: ["a"] }] } });
    assert.equal(o.network.secrets[0]!.value, "v", "the input is not changed");
    const none = { tier: "nano" };
    assert.equal(redactSecrets(none), none);
  });
});

describe("secrets: which URLs, substitution and scrubbing", () => {
  const set = new SecretSet(
    [
      { name: "TOKEN", value: VALUE, hosts: ["api.example.com", "*.svc.example:8443"] },
      { name: "OTHER", value: "other-value", hosts: ["https://other.example"] },
    ],
    fixed,
  );
  const O = fixed("OTHER");

  it("hosts match as allow entries do: host, wildcard, scheme and port", () => {
    const names = (u: string) => set.forUrl(new URL(u)).map((s) => s.name);
    assert.deepEqual(names("https://api.example.com/x"), ["TOKEN"]);
    assert.deepEqual(names("http://api.example.com/x"), ["TOKEN"]);
    assert.deepEqual(names("https://API.Example.com./x".replace(".com.", ".com")), ["TOKEN"]);
    assert.deepEqual(names("https://api.example.com:8443/x"), [], "no port in the entry: the default port only");
    assert.deepEqual(names("https://evil.api.example.com/"), []);
    assert.deepEqual(names("https://a.svc.example:8443/"), ["TOKEN"]);
    assert.deepEqual(names("https://svc.example:8443/"), [], "*. never matches the name itself");
    assert.deepEqual(names("https://other.example/"), ["OTHER"]);
    assert.deepEqual(names("http://other.example/"), [], "the entry's scheme");
  });

  it("values go into header values and the query (percent-encoded), for that URL's secrets only", () => {
    const headers: [string, string][] = [
      ["authorization", `Bearer ${P}`],
      ["x-other", O],
      ["x-both", `${P},${P}`],
      [P, "names are left alone"],
    ];
    const { headers: h, url } = set.substitute(headers, new URL(`https://api.example.com/${P}?key=${P}&o=${O}#${P}`));
    assert.deepEqual(h, [
      ["authorization", `Bearer ${VALUE}`],
      ["x-other", O],
      ["x-both", `${VALUE},${VALUE}`],
      [P, "names are left alone"],
    ]);
    assert.equal(url.pathname, `/${P}`, "never in the path");
    assert.equal(new URLSearchParams(url.search).get("key"), VALUE);
    assert.equal(new URLSearchParams(url.search).get("o"), O);
    assert.equal(url.hash, `#${P}`);
    assert.equal(headers[0]![1], `Bearer ${P}`, "the input is not changed");
    const elsewhere = set.substitute(headers, new URL(`https://evil.example/?key=${P}`));
    assert.deepEqual(elsewhere.headers, headers);
    assert.equal(elsewhere.url.search, `?key=${P}`);
  });

  it("scrub turns the value back into the placeholder, raw, percent-encoded, form-encoded or JSON-escaped, in text and bytes", () => {
    const strict = encodeURIComponent(VALUE).replace("'", "%27");
    const forms = [VALUE, encodeURIComponent(VALUE), strict, new URLSearchParams({ v: VALUE }).toString().slice(2), JSON.stringify(VALUE).slice(1, -1)];
    for (const f of forms) {
      assert.equal(set.scrub(`a ${f} b other-value c`), `a ${P} b ${O} c`, f);
      assert.equal(set.scrub(Buffer.from(`\u00e9 ${f}\u00ff`)).toString(), `\u00e9 ${P}\u00ff`, f);
    }
    assert.equal(set.scrub(JSON.stringify({ h: `Bearer ${VALUE}` })), JSON.stringify({ h: `Bearer ${P}` }));
    const binary = Buffer.from([0, 255, 1, 2]);
    assert.equal(set.scrub(binary), binary, "nothing to scrub: the same buffer");
    const unicode = new SecretSet([{ name: "U", value: "clé-ü€", hosts: ["a.example"] }], fixed);
    assert.equal(unicode.scrub(Buffer.from("x clé-ü€ y")).toString(), `x ${fixed("U")} y`);
    assert.equal(unicode.scrub(`x ${encodeURIComponent("clé-ü€")} y`), `x ${fixed("U")} y`);
    assert.equal(new SecretSet().scrub("anything"), "anything");
  });
});

type Seen = { url: string; headers: http.IncomingHttpHeaders };

describe("secrets: through the fetch broker", () => {
  let server: http.Server;
  let port = 0;
  const seen: Seen[] = [];
  before(async () => {
    server = http.createServer((req, res) => {
      seen.push({ url: req.url ?? "", headers: req.headers });
      const u = new URL(req.url ?? "/", "http://x");
      if (u.pathname === "/echo") {
        res.setHeader("x-echo", String(req.headers.authorization));
        res.setHeader("x-query", u.search);
        return res.end(JSON.stringify({ headers: req.headers, url: req.url }));
      }
      if (u.pathname === "/to-other" || u.pathname === "/to-other-raw") {
        // An open redirect that carries what it got to another host (encoded, or as it came).
        const k = String(req.headers["x-key"]);
        res.writeHead(302, { location: `http://other.test:${port}/echo?k=${u.pathname === "/to-other" ? encodeURIComponent(k) : k}` });
        return res.end();
      }
      if (u.pathname === "/fail") return req.socket.destroy();
      res.end("ok");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const resolve: Resolver = async () => ["127.0.0.1"];
  const make = (grant: Partial<NetworkGrantInput> = {}) =>
    new FetchBroker(
      networkSchema.parse({
        allow: [`secret.test:${port}`, `other.test:${port}`, `127.0.0.1:${port}`],
        secrets: [{ name: "TOKEN", value: VALUE, hosts: [`secret.test:${port}`] }],
        timeoutMs: 3000,
        ...grant,
      }),
      { resolve },
    );
  let req = 0;
  const fetchVia = (b: FetchBroker, url: string, headers: [string, string][] = []) =>
    new Promise<FetchResult>((r) => b.handle({ type: "fetch", id: 1, req: ++req, url, method: "GET", headers }, Date.now() + 10_000, r));
  const everything = (b: FetchBroker, rs: FetchResult[]) => JSON.stringify([rs, b.log.entries()]) + rs.map((r) => (r.ok ? Buffer.from(r.body, "base64").toString() : "")).join("");
  const leaks = (s: string) => [VALUE, encodeURIComponent(VALUE), encodeURIComponent(VALUE).replace("'", "%27"), JSON.stringify(VALUE).slice(1, -1)].some((f) => s.includes(f));

  it("the secret's host gets the value in headers and query; the answer echoing it shows the placeholder", async () => {
    const b = make();
    const p = b.secrets.placeholders().TOKEN!;
    seen.length = 0;
    const r = await fetchVia(b, `http://secret.test:${port}/echo?key=${p}`, [["Authorization", `Bearer ${p}`]]);
    assert.ok(r.ok);
    assert.equal(seen[0]!.headers.authorization, `Bearer ${VALUE}`);
    assert.equal(new URL(seen[0]!.url, "http://x").searchParams.get("key"), VALUE);
    const headers = Object.fromEntries(r.headers);
    assert.equal(headers["x-echo"], `Bearer ${p}`);
    assert.equal(new URLSearchParams(headers["x-query"]).get("key"), p);
    const body = JSON.parse(Buffer.from(r.body, "base64").toString()) as { headers: Record<string, string>; url: string };
    assert.equal(body.headers.authorization, `Bearer ${p}`);
    assert.equal(r.url, `http://secret.test:${port}/echo?key=${p}`);
    assert.equal(leaks(everything(b, [r])), false);
  });

  it("another allowed host gets the placeholder only", async () => {
    const b = make();
    const p = b.secrets.placeholders().TOKEN!;
    seen.length = 0;
    const r = await fetchVia(b, `http://other.test:${port}/echo?key=${p}`, [["Authorization", `Bearer ${p}`]]);
    assert.ok(r.ok);
    assert.equal(seen[0]!.headers.authorization, `Bearer ${p}`);
    assert.equal(new URL(seen[0]!.url, "http://x").searchParams.get("key"), p);
    const byAddress = await fetchVia(b, `http://127.0.0.1:${port}/echo`, [["x-key", p]]);
    assert.ok(byAddress.ok);
    assert.equal(seen[1]!.headers["x-key"], p, "the same server by address is another host");
  });

  it("a redirect to another host gets the placeholder, even when the secret's host put the value in the Location", async () => {
    for (const route of ["/to-other", "/to-other-raw"]) {
      const b = make();
      const p = b.secrets.placeholders().TOKEN!;
      seen.length = 0;
      const r = await fetchVia(b, `http://secret.test:${port}${route}`, [["x-key", p]]);
      assert.ok(r.ok, route);
      assert.equal(seen[0]!.headers["x-key"], VALUE);
      assert.equal(seen[1]!.headers.host, `other.test:${port}`);
      assert.equal(seen[1]!.headers["x-key"], p, "the next hop is matched again");
      assert.equal(new URL(seen[1]!.url, "http://x").searchParams.get("k"), p, `${route}: the Location's value was scrubbed before the hop`);
      assert.equal(leaks(everything(b, [r]) + JSON.stringify(seen.slice(1))), false, route);
    }
  });

  it("errors and the log carry no value", async () => {
    const b = make();
    const p = b.secrets.placeholders().TOKEN!;
    const failed = await fetchVia(b, `http://secret.test:${port}/fail?key=${p}`, [["Authorization", `Bearer ${p}`]]);
    assert.equal(failed.ok, false);
    const refused = await fetchVia(b, `http://nope.test/?key=${p}`);
    assert.equal(refused.ok, false);
    assert.equal(leaks(everything(b, [failed, refused])), false);
    assert.ok(b.log.entries().length >= 2);
  });
});

describe("secrets: the sandbox's options", () => {
  it("env naming a secret is refused at create; sb.options shows ***", async () => {
    const network = { allow: ["a.example"], secrets: [{ name: "TOKEN", value: "the-value", hosts: ["a.example"] }] };
    await assert.rejects(Sandbox.create({ tier: "nano", language: "javascript", env: { TOKEN: "x" }, network }), (e: unknown) => e instanceof InvalidOptionsError && /env\.TOKEN/.test(e.message));
    const sb = await Sandbox.create({ tier: "nano", language: "javascript", network, pool: false });
    try {
      assert.equal(JSON.stringify(sb.options).includes("the-value"), false);
      assert.equal((sb.options as { network?: { secrets: { value: string }[] } }).network?.secrets[0]!.value, "***");
      assert.match(sb.network.secretPlaceholders().TOKEN!, /^agentbox-secret-TOKEN-[0-9a-f]{32}$/);
    } finally {
      await sb.kill();
    }
  });
});
