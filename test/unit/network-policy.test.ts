// The network grant's address rules, without a socket: which addresses are public, which are
// refused unless an entry names them, what names them (an IP entry whose scheme and port fit, or
// "localhost" for loopback), the port rule, what the log keeps of a URL, deny entries (parsed as
// allow entries, winning over them) and the server's "within" rule for what a client may ask.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidOptionsError } from "../../src/errors.js";
import { optionSchemas } from "../../src/engines/registry.js";
import { parseTierOptions } from "../../src/policy/options.js";
import { checkAddresses, checkUrl, classifyAddress, formatRule, parseAllowEntry, parseAllowList, urlForLog, withinRule, type AddressKind } from "../../src/policy/network.js";

describe("network policy: address classification", () => {
  it("IPv4: public unicast only; loopback, private, link-local, multicast, unspecified, CGNAT, metadata and reserved ranges are not", () => {
    const cases: [string, AddressKind][] = [
      ["8.8.8.8", "public"],
      ["93.184.215.14", "public"],
      ["100.63.255.255", "public"],
      ["100.128.0.0", "public"],
      ["172.15.255.255", "public"],
      ["172.32.0.0", "public"],
      ["127.0.0.1", "loopback"],
      ["127.255.255.254", "loopback"],
      ["10.0.0.5", "private"],
      ["172.16.0.1", "private"],
      ["172.31.255.255", "private"],
      ["192.168.1.1", "private"],
      ["169.254.0.1", "linkLocal"],
      ["224.0.0.1", "multicast"],
      ["239.255.255.250", "multicast"],
      ["0.0.0.0", "unspecified"],
      ["0.1.2.3", "unspecified"],
      ["100.64.0.1", "carrierGradeNat"],
      ["100.127.255.255", "carrierGradeNat"],
      ["169.254.169.254", "metadata"],
      ["169.254.170.2", "metadata"],
      ["100.100.100.200", "metadata"],
      ["255.255.255.255", "reserved"],
      ["192.0.2.1", "reserved"],
      ["198.18.0.1", "reserved"],
      ["240.0.0.1", "reserved"],
    ];
    for (const [a, kind] of cases) assert.equal(classifyAddress(a).kind, kind, a);
    assert.equal(classifyAddress("10.0.0.5").description, "a private address");
    assert.equal(classifyAddress("169.254.169.254").description, "a cloud metadata address");
  });

  it("IPv6: public unicast only; fc00::/7 (fd00::/8 too) is private; embedded IPv4 addresses are judged as IPv4", () => {
    const cases: [string, AddressKind][] = [
      ["2606:4700:4700::1111", "public"],
      ["2a00:1450:4001:80b::200e", "public"],
      ["::1", "loopback"],
      ["::", "unspecified"],
      ["fe80::1", "linkLocal"],
      ["fe80::1%eth0", "linkLocal"],
      ["febf::1", "linkLocal"],
      ["fc00::1", "private"],
      ["fd00::1", "private"],
      ["fdff:ffff::1", "private"],
      ["ff02::1", "multicast"],
      ["fd00:ec2::254", "metadata"],
      ["fd00:ec2:0:0:0:0:0:254", "metadata"],
      ["2001:db8::1", "reserved"],
      ["fec0::1", "reserved"],
      ["::7f00:1", "reserved"], // IPv4-compatible (deprecated): not reachable as public
      ["2001::1", "reserved"], // Teredo
      // IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 (2002::/16): the IPv4 address inside decides.
      ["::ffff:127.0.0.1", "loopback"],
      ["::ffff:7f00:1", "loopback"],
      ["::ffff:10.0.0.5", "private"],
      ["::ffff:169.254.169.254", "metadata"],
      ["::ffff:8.8.8.8", "public"],
      ["64:ff9b::10.0.0.5", "private"],
      ["64:ff9b::8.8.8.8", "public"],
      ["64:ff9b:1::1", "reserved"], // NAT64 local use
      ["2002:7f00:1::1", "loopback"],
      ["2002:808:808::1", "public"],
      ["not an address", "reserved"],
    ];
    for (const [a, kind] of cases) assert.equal(classifyAddress(a).kind, kind, a);
    assert.equal(classifyAddress("::ffff:127.0.0.1").key, "127.0.0.1", "IPv4-mapped compares as its IPv4 address");
    assert.match(classifyAddress("::ffff:10.0.0.5").description, /private address \(IPv4-mapped 10\.0\.0\.5\)/);
  });
});

describe("network policy: the decision", () => {
  const rules = parseAllowList(["app.test:8080", "*.corp.test", "127.0.0.1:8080", "[::1]:9000", "http://10.0.0.5", "localhost", "db.test", "http://169.254.169.254"]);
  const decide = (url: string, addresses: string[]) => {
    assert.ok(checkUrl(url, rules).ok, `${url} passes the name check`);
    return checkAddresses(new URL(url), addresses, rules);
  };

  it("public addresses pass; a name resolving to a non-public address is refused with the entry that would permit it", () => {
    assert.deepEqual(decide("http://app.test:8080/", ["93.184.215.14", "2606:4700::1"]), { ok: true, reason: "93.184.215.14 is public; 2606:4700::1 is public" });
    assert.deepEqual(decide("https://x.corp.test/", ["10.1.2.3"]), { ok: false, reason: 'x.corp.test resolves to 10.1.2.3, a private address; add "10.1.2.3" to network.allow to permit it' });
    assert.deepEqual(decide("http://app.test:8080/", ["172.16.0.9"]), { ok: false, reason: 'app.test resolves to 172.16.0.9, a private address; add "172.16.0.9:8080" to network.allow to permit it' });
    assert.match((decide("http://db.test/", ["fd00::5"]) as { reason: string }).reason, /resolves to fd00::5, a private address \(unique local, fc00::\/7\); add "\[fd00::5\]"/);
    assert.match((decide("https://x.corp.test/", ["169.254.169.254"]) as { reason: string }).reason, /^x\.corp\.test resolves to 169\.254\.169\.254, a cloud metadata address/);
  });

  it("every address must pass: one refused address refuses the name, whichever comes first", () => {
    assert.equal(decide("http://app.test:8080/", ["93.184.215.14", "192.168.0.1"]).ok, false);
    assert.equal(decide("http://app.test:8080/", ["192.168.0.1", "93.184.215.14"]).ok, false);
    assert.deepEqual(checkAddresses(new URL("http://app.test:8080/"), [], rules), { ok: false, reason: "app.test has no address" });
  });

  it("an IP entry names its address for requests whose scheme and port fit it (IPv4-mapped forms included)", () => {
    assert.deepEqual(decide("http://app.test:8080/", ["127.0.0.1"]), { ok: true, reason: '127.0.0.1 is named in network.allow ("127.0.0.1:8080")' });
    assert.equal(decide("http://app.test:8080/", ["::ffff:127.0.0.1"]).ok, true);
    assert.equal(decide("http://app.test:8080/", ["::1"]).ok, false, "[::1] is named for port 9000 only");
    assert.equal(decide("http://db.test/", ["10.0.0.5"]).ok, true, "http://10.0.0.5 fits http on 80");
    assert.equal(decide("https://db.test/", ["10.0.0.5"]).ok, false, "http://10.0.0.5 does not fit https");
    assert.equal(decide("http://db.test/", ["169.254.169.254"]).ok, true, "even the metadata address, when an entry names it");
    assert.equal(decide("http://db.test/", ["10.0.0.6"]).ok, false);
    assert.equal(decide("http://127.0.0.1:8080/", ["127.0.0.1"]).ok, true, "an IP literal URL is let through only by the entry naming it");
  });

  it('"localhost" names the loopback addresses, for the name localhost only', () => {
    assert.equal(decide("http://localhost/", ["127.0.0.1", "::1"]).ok, true);
    assert.equal(decide("https://localhost/", ["127.0.0.1"]).ok, true);
    assert.deepEqual(decide("http://localhost/", ["10.0.0.9"]), { ok: false, reason: 'localhost resolves to 10.0.0.9, a private address; add "10.0.0.9" to network.allow to permit it' });
    assert.equal(decide("http://db.test/", ["127.0.0.1"]).ok, false, "another name resolving to loopback is not localhost");
    const noLocal = parseAllowList(["*.a.test"]);
    assert.equal(checkAddresses(new URL("http://x.a.test/"), ["127.0.0.1"], noLocal).ok, false, "a wildcard never names an address");
    const portOnly = parseAllowList(["localhost:3000"]);
    assert.equal(checkAddresses(new URL("http://localhost:3000/"), ["::1"], portOnly).ok, true);
    assert.equal(checkAddresses(new URL("http://localhost/"), ["::1"], portOnly).ok, false, "the entry's port applies");
  });

  it("ports: without one an entry allows each scheme's default (80, 443) only; with one, that port only", () => {
    const r = parseAllowList(["api.test", "alt.test:8443"]);
    const ok = (u: string) => checkUrl(u, r).ok;
    assert.ok(ok("http://api.test/") && ok("https://api.test/") && ok("http://api.test:80/") && ok("https://api.test:443/"));
    assert.ok(!ok("http://api.test:443/") && !ok("https://api.test:80/") && !ok("http://api.test:8080/"));
    assert.ok(ok("http://alt.test:8443/") && ok("https://alt.test:8443/") && !ok("https://alt.test/"));
  });

  it("entries print back canonically; the log keeps no query, fragment or credentials", () => {
    for (const e of ["api.test", "https://*.corp.test:8443", "127.0.0.1:8080", "[::1]:9000", "http://10.0.0.5"]) {
      const rule = parseAllowEntry(e);
      assert.ok(typeof rule !== "string");
      assert.equal(formatRule(rule), e);
    }
    assert.equal(formatRule(parseAllowList(["[0:0::1]"])[0]!), "[::1]");
    assert.equal(urlForLog(new URL("https://user:pw@api.test:8443/a/b?token=secret#frag")), "https://api.test:8443/a/b");
    assert.equal(urlForLog(new URL("http://[::1]/x?q")), "http://[::1]/x");
    assert.equal(urlForLog(new URL(`http://a.test/${"x".repeat(5000)}`)).length, 2049);
  });
});

describe("network policy: deny", () => {
  const parse = (network: unknown) => parseTierOptions(optionSchemas, { language: "javascript", network }) as { network?: { deny: string[] } };

  it("deny entries have the allow syntax; a bad one is named by its field; the default is none", () => {
    assert.deepEqual(parse({ allow: ["api.test"] }).network?.deny, []);
    assert.deepEqual(parse({ allow: ["*.corp.test"], deny: ["secret.corp.test", "http://10.0.0.5:8080"] }).network?.deny, ["secret.corp.test", "http://10.0.0.5:8080"]);
    for (const [deny, pattern] of [
      [["ok.test", "http://x/y"], /^network\.deny\.1$/],
      [["*.com"], /^network\.deny\.0$/],
      ["api.test", /^network\.deny$/],
    ] as const) {
      assert.throws(
        () => parse({ allow: ["api.test"], deny }),
        (e: unknown) => e instanceof InvalidOptionsError && pattern.test(e.issues[0]!.path) && e.message.includes(e.issues[0]!.path),
        JSON.stringify(deny),
      );
    }
    assert.throws(() => parse({ deny: ["api.test"] }), (e: unknown) => e instanceof InvalidOptionsError && e.issues[0]!.path === "network.allow", "deny alone grants nothing, so allow is still required");
  });

  it("deny wins over allow and names its entry; without a port it covers every port, without a scheme both", () => {
    const allow = parseAllowList(["*.corp.test", "*.corp.test:8443", "api.test", "api.test:8080", "127.0.0.1:9000"]);
    const deny = parseAllowList(["secret.corp.test", "https://api.test", "127.0.0.1:9000"]);
    const check = (u: string) => checkUrl(u, allow, deny);
    assert.deepEqual(check("https://secret.corp.test/x"), { ok: false, message: 'https://secret.corp.test:443 is denied by network.deny entry "secret.corp.test"', denied: "secret.corp.test" });
    assert.equal(check("https://secret.corp.test:8443/").ok, false, "no port in a deny entry: every port");
    assert.equal(check("https://x.secret.corp.test/").ok, true, "an exact deny entry does not cover subdomains");
    assert.equal(check("https://open.corp.test/").ok, true);
    assert.equal(check("https://api.test/").ok, false);
    assert.match((check("https://api.test:8080/") as { message: string }).message, /denied by network\.deny entry "https:\/\/api\.test"/);
    assert.equal(check("http://api.test/").ok, true, "https:// in a deny entry leaves http alone");
    assert.equal(check("http://api.test:8080/").ok, true);
    assert.equal((check("http://127.0.0.1:9000/") as { denied?: string }).denied, "127.0.0.1:9000");
    assert.equal((check("http://2130706433:9000/") as { denied?: string }).denied, "127.0.0.1:9000", "numeric host forms are the address they denote");
    assert.equal(check("http://nowhere.test/").ok, false);
    assert.equal((check("http://nowhere.test/") as { denied?: string }).denied, undefined, "not allowed is not denied");
    const wild = parseAllowList(["*.bad.corp.test"]);
    assert.equal(checkUrl("https://a.bad.corp.test/", allow, wild).ok, false);
    assert.equal(checkUrl("https://bad.corp.test/", allow, wild).ok, true, "a *. deny entry, like an allow entry, leaves the apex alone");
  });

  it("an IP deny entry refuses a name resolving to its address, even an address an allow entry names", () => {
    const allow = parseAllowList(["app.test", "10.0.0.5", "public.test"]);
    const deny = parseAllowList(["10.0.0.5", "93.184.215.14"]);
    assert.deepEqual(checkAddresses(new URL("http://app.test/"), ["10.0.0.5"], allow, deny), { ok: false, reason: 'app.test resolves to 10.0.0.5, which is denied by network.deny entry "10.0.0.5"' });
    assert.deepEqual(checkAddresses(new URL("http://public.test/"), ["8.8.8.8", "::ffff:93.184.215.14"], allow, deny), {
      ok: false,
      reason: 'public.test resolves to ::ffff:93.184.215.14, which is denied by network.deny entry "93.184.215.14"',
    });
    assert.equal(checkAddresses(new URL("http://public.test/"), ["8.8.8.8"], allow, deny).ok, true);
    assert.equal(checkAddresses(new URL("http://app.test/"), ["10.0.0.5"], allow, parseAllowList(["10.0.0.5:8080"])).ok, true, "a deny entry with a port covers that port only");
    assert.equal(checkAddresses(new URL("http://app.test/"), ["10.0.0.5"], allow, parseAllowList(["app.test"])).ok, true, "a name in deny is checkUrl's business, not the address check's");
  });
});

describe("network policy: what a client may ask for (withinRule)", () => {
  const within = (asked: string, granted: string) => withinRule(parseAllowList([asked])[0]!, parseAllowList([granted])[0]!);

  it("the same entry, a name under a granted *. name, a narrower scheme; never another port or a wider scheme", () => {
    assert.ok(within("api.test", "api.test") && within("API.test", "api.test"));
    assert.ok(within("https://api.test", "api.test"), "one scheme of the two granted");
    assert.ok(!within("api.test", "https://api.test"), "both schemes where one is granted");
    assert.ok(within("x.corp.test", "*.corp.test") && within("a.b.corp.test", "*.corp.test") && within("*.b.corp.test", "*.corp.test") && within("*.corp.test", "*.corp.test"));
    assert.ok(!within("corp.test", "*.corp.test"), "the apex is not under *.");
    assert.ok(!within("*.corp.test", "x.corp.test") && !within("*.other.test", "*.corp.test") && !within("x.other.test", "*.corp.test"));
    assert.ok(!within("api.test:8080", "api.test") && !within("api.test", "api.test:8080") && within("api.test:8080", "api.test:8080"));
    assert.ok(within("https://api.test:443", "https://api.test") && within("https://api.test", "api.test:443") && within("http://api.test:80", "api.test"), "ports compared as the requests they allow");
    assert.ok(!within("api.test:443", "https://api.test"), "http on 443 too");
    assert.ok(within("https://api.test:8443", "api.test:8443") && !within("api.test:8443", "https://api.test:8443"));
    assert.ok(within("127.0.0.1:8080", "127.0.0.1:8080") && !within("127.0.0.1:8081", "127.0.0.1:8080") && !within("[::1]", "localhost"));
    assert.ok(!within("localhost", "*.corp.test"));
  });
});
