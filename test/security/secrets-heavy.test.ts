// Network secrets on the heavy tier (gVisor and the microVM): the guest holds a placeholder; the host's egress
// proxy puts the value into requests to the secret's hosts only (plain HTTP rewritten in passing,
// HTTPS intercepted with the sandbox's own CA, which the guest's tools trust through the bundle the
// agent writes) and scrubs it from what comes back. The value must never be readable in the guest:
// its env, its files, its processes' memory, a response, the network log. Loopback servers, names
// mapped in the test's resolver; the proxy trusts the test's CA for its own upstream TLS.
import assert from "node:assert/strict";
import dns from "node:dns/promises";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import tls from "node:tls";
import { after, before, describe, it, mock } from "node:test";
import { InvalidOptionsError, Sandbox } from "../../src/index.js";
import { upstreamTls } from "../../src/engines/heavy/egress.js";
import { createSandboxCa } from "../../src/policy/tls-ca.js";
import "../helpers.js";
import { gvisor, microvm, type HeavyBackend } from "../conformance/heavy.js";

const VALUE = "sk-live-0123456789abcdef-SECRET";
const CONTROL = "sk-test-fedcba9876543210-CONTRL";

for (const backend of [gvisor, microvm] as HeavyBackend[]) describe(`heavy tier network secrets (${backend.name})`, { skip: backend.skip }, () => {
  const seen: { server: string; auth: string | undefined; url: string }[] = [];
  const servers: http.Server[] = [];
  let httpsPort = 0;
  let httpPort = 0;
  let otherPort = 0;
  const lookup = dns.lookup;

  before(async () => {
    await backend.prepare();
    const echo =
      (server: string): http.RequestListener =>
      (req, res) => {
        seen.push({ server, auth: req.headers.authorization, url: req.url ?? "" });
        res.setHeader("x-echo", req.headers.authorization ?? "");
        res.end(JSON.stringify({ auth: req.headers.authorization, url: req.url }));
      };
    const ca = createSandboxCa("agentbox test upstream CA");
    upstreamTls.ca = [ca.caPem, ...tls.rootCertificates];
    const s1 = https.createServer({ SNICallback: (name, cb) => cb(null, ca.secureContextFor(name)) }, echo("api-https"));
    const s2 = http.createServer(echo("api-http"));
    const s3 = http.createServer(echo("other"));
    for (const s of [s1, s2, s3]) {
      await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
      servers.push(s);
    }
    [httpsPort, httpPort, otherPort] = servers.map((s) => (s.address() as AddressInfo).port) as [number, number, number];
    const names: Record<string, string> = { "api.test": "127.0.0.1", "other.test": "127.0.0.1" };
    mock.method(dns, "lookup", async (host: string, options: object) => (host in names ? [{ address: names[host], family: 4 }] : (lookup as (h: string, o: object) => Promise<unknown>)(host, options)));
  });

  after(() => {
    upstreamTls.ca = undefined;
    mock.restoreAll();
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
  });

  it("the value reaches the secret's hosts only (HTTPS intercepted, plain HTTP), and never the guest", async () => {
    await using sb = await Sandbox.create({
      ...backend.opts,
      network: {
        allow: [`api.test:${httpsPort}`, `api.test:${httpPort}`, `other.test:${otherPort}`, `127.0.0.1:${httpsPort}`, `127.0.0.1:${httpPort}`, `127.0.0.1:${otherPort}`],
        secrets: [{ name: "API_TOKEN", value: VALUE, hosts: [`api.test:${httpsPort}`, `api.test:${httpPort}`] }],
      },
    });
    const placeholder = (await sb.runCode("import os\nos.environ['API_TOKEN']")).value!.slice(1, -1);
    assert.match(placeholder, /^agentbox-secret-API_TOKEN-[0-9a-f]{32}$/);
    const code = `import json, os, urllib.request
tok = os.environ["API_TOKEN"]
out = []
for url in ["https://api.test:${httpsPort}/echo", "http://api.test:${httpPort}/echo", "http://other.test:${otherPort}/echo"]:
    r = urllib.request.urlopen(urllib.request.Request(url + "?key=" + tok, headers={"Authorization": "Bearer " + tok}), timeout=30)
    out.append({"body": json.loads(r.read()), "echo": r.headers["x-echo"]})
print(json.dumps(out))`;
    const r = await sb.runCode(code);
    assert.ok(!r.error, r.stderr + JSON.stringify(r.error));
    const got = JSON.parse(r.stdout) as { body: { auth: string; url: string }; echo: string }[];
    // What the servers received: the value for the secret's host, on both schemes; the placeholder elsewhere.
    const byServer = Object.fromEntries(seen.map((s) => [s.server, s]));
    assert.equal(byServer["api-https"]?.auth, `Bearer ${VALUE}`);
    assert.equal(byServer["api-https"]?.url, `/echo?key=${VALUE}`);
    assert.equal(byServer["api-http"]?.auth, `Bearer ${VALUE}`);
    assert.equal(byServer["other"]?.auth, `Bearer ${placeholder}`);
    // What the guest got back: echoes scrubbed to the placeholder.
    for (const g of got) {
      assert.equal(g.body.auth, `Bearer ${placeholder}`);
      assert.equal(g.echo, `Bearer ${placeholder}`);
      assert.equal(g.body.url, `/echo?key=${placeholder}`);
    }
    // Nowhere in the guest: env of every process, files, the REPL's own memory.
    const scan = `import os, re
# Built at run time (never a literal of the code), beside a control made the same way that was never sent:
# the value's count in memory must not exceed the control's.
needle = bytes(reversed(${JSON.stringify([...VALUE].reverse().join(""))}.encode()))
control = bytes(reversed(${JSON.stringify([...CONTROL].reverse().join(""))}.encode()))
hits = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        if needle in open("/proc/%s/environ" % pid, "rb").read():
            hits.append("environ " + pid)
    except OSError:
        pass
for root in ("/tmp", "/home/user"):
    for d, _, files in os.walk(root):
        for f in files:
            try:
                if needle in open(os.path.join(d, f), "rb").read():
                    hits.append(os.path.join(d, f))
            except OSError:
                pass
import ctypes
mem = 0
counts = [0, 0]
with open("/proc/self/maps") as maps:
    for line in maps:
        parts = line.split()
        # The process's own heap and anonymous memory (where a response body would be): readable in place.
        if parts[1] != "rw-p" or (len(parts) > 5 and parts[5] != "[heap]"):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        chunk = ctypes.string_at(lo, hi - lo)
        mem += len(chunk)
        counts[0] += chunk.count(needle)
        counts[1] += chunk.count(control)
if counts[0] > counts[1]:
    hits.append("memory %s" % counts)
(hits, mem > 1_000_000)`;
    const s = await sb.runCode(scan);
    assert.ok(!s.error, s.stderr + JSON.stringify(s.error));
    assert.equal(s.value, "([], True)", "the value is nowhere in the guest (and its memory was really read)");
    const log = JSON.stringify(sb.network.log());
    assert.ok(!log.includes(VALUE), "the log never holds the value");
    assert.ok(sb.network.log().some((e) => e.method === "CONNECT" && /TLS intercepted/.test(e.reason)));
    assert.ok(!JSON.stringify(sb.options).includes(VALUE), "options shown redact the value");
  });

  it("a tunnel to a host without secrets is not intercepted; an env entry named like a secret is refused", async () => {
    await using sb = await Sandbox.create({
      ...backend.opts,
      network: { allow: [`api.test:${httpsPort}`, `127.0.0.1:${httpsPort}`], secrets: [{ name: "T", value: VALUE, hosts: ["elsewhere.test"] }] },
    });
    // The guest trusts the sandbox CA (its bundle) but the test server's certificate comes from another CA: a pass-through tunnel fails verification in the guest.
    const r = await sb.runCode(`import urllib.request\ntry:\n    urllib.request.urlopen("https://api.test:${httpsPort}/", timeout=20)\n    print("verified")\nexcept Exception as e:\n    print(type(e).__name__, "CERTIFICATE_VERIFY_FAILED" in str(e))`);
    assert.equal(r.stdout, "URLError True\n", r.stderr);
    await assert.rejects(Sandbox.create({ ...backend.opts, env: { T: "x" }, network: { allow: ["a.test"], secrets: [{ name: "T", value: VALUE, hosts: ["a.test"] }] } }), InvalidOptionsError);
  });
});
