// The per-sandbox CA for TLS interception: a Node TLS server presenting secureContextFor(name)
// through SNICallback is verified by a client that trusts only caPem, for DNS names and IP
// addresses; a client trusting the system store, or another sandbox's CA, refuses it.
import assert from "node:assert/strict";
import crypto from "node:crypto";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { createSandboxCa, type SandboxCa } from "../../src/policy/tls-ca.js";

describe("tls-ca: a per-sandbox CA", () => {
  let ca: SandboxCa;
  let server: tls.Server;
  let port = 0;
  const asked: string[] = [];

  before(async () => {
    ca = createSandboxCa();
    server = tls.createServer(
      {
        SNICallback: (name, cb) => {
          asked.push(name);
          cb(null, ca.secureContextFor(name));
        },
      },
      (s) => s.end("hello"),
    );
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
  });

  function connect(opts: tls.ConnectionOptions): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: "127.0.0.1", port, ...opts }, () => {
        let data = "";
        s.setEncoding("utf8").on("data", (d: string) => (data += d));
        s.on("end", () => resolve(data));
      });
      s.on("error", reject);
    });
  }

  it("the CA certificate: a CA, for signing certificates, valid from a day back", () => {
    const c = new crypto.X509Certificate(ca.caPem);
    assert.equal(c.ca, true);
    assert.ok(new Date(c.validFrom).getTime() < Date.now() - 12 * 3600 * 1000);
    assert.ok(new Date(c.validTo).getTime() > Date.now() + 20 * 24 * 3600 * 1000);
  });

  it("a client trusting only caPem verifies the leaf for the name it asked", async () => {
    assert.equal(await connect({ servername: "api.example.com", ca: ca.caPem }), "hello");
    assert.equal(await connect({ servername: "other.example.org", ca: ca.caPem }), "hello");
    assert.deepEqual(asked.slice(-2), ["api.example.com", "other.example.org"]);
  });

  it("an IP address gets a leaf with an IP SAN (no SNI: the proxy knows the address it intercepts)", async () => {
    const raw = net.createServer((socket) => {
      const s = new tls.TLSSocket(socket, { isServer: true, secureContext: ca.secureContextFor("127.0.0.1") });
      s.on("error", () => undefined);
      s.end("hello by address");
    });
    await new Promise<void>((r) => raw.listen(0, "127.0.0.1", r));
    try {
      const got = await new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: "127.0.0.1", port: (raw.address() as AddressInfo).port, ca: ca.caPem }, () => {
          let data = "";
          s.setEncoding("utf8").on("data", (d: string) => (data += d));
          s.on("end", () => resolve(data));
        });
        s.on("error", reject);
      });
      assert.equal(got, "hello by address");
    } finally {
      await new Promise((r) => raw.close(r));
    }
  });

  it("the leaf names that host only: a client checking another name refuses it", async () => {
    await assert.rejects(connect({ servername: "api.example.com", ca: ca.caPem, checkServerIdentity: (_h, cert) => tls.checkServerIdentity("evil.example", cert) }), /evil\.example|altnames/i);
  });

  it("a client that does not trust the CA refuses it (system store, another sandbox's CA)", async () => {
    await assert.rejects(connect({ servername: "api.example.com" }), /self[- ]signed|unable to (get|verify)|certificate/i);
    const other = createSandboxCa();
    await assert.rejects(connect({ servername: "api.example.com", ca: other.caPem }), /unable to (get|verify)|certificate|signature/i);
  });

  it("leaves are cached per name, one leaf key per CA", () => {
    assert.equal(ca.secureContextFor("api.example.com"), ca.secureContextFor("API.example.com"));
    assert.notEqual(ca.secureContextFor("api.example.com"), ca.secureContextFor("b.example.com"));
  });
});
