// Exposed ports of heavy-tier sandboxes, for real: a guest HTTP server reached through the host
// listener sb.ports.expose() opens, raw TCP both ways (a payload many flow-control windows long,
// half-close), a guest port nothing listens on, idempotence, the nano tier's refusal, and that no
// listener outlives its sandbox (kill, or its death). The same basic expose on the microVM.
import assert from "node:assert/strict";
import net from "node:net";
import { before, describe, it } from "node:test";
import { InvalidOptionsError, PortConnectError, Sandbox, SandboxClosedError, TierUnavailableError } from "../../src/index.js";
import "../helpers.js";
import { ensureImage, skipHeavy, waitFor } from "../heavy.js";
import { gvisor, microvm } from "../conformance/heavy.js";
import { startGuestApp, startInGuest } from "../ports.js";

/** Whether something on the host accepts connections on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

/** Send `data` over a TCP connection, half-close, and collect what comes back until the peer ends. */
function roundTrip(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true }, () => s.end(data));
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => resolve(Buffer.concat(chunks)));
    s.on("error", reject);
  });
}

const hostPort = (url: string) => Number(new URL(url).port);

describe("exposed ports (gVisor)", { skip: skipHeavy }, () => {
  before(() => ensureImage());

  it("expose forwards a host listener to a guest HTTP server (python3 -m http.server); idempotent; list; close", async () => {
    await using sb = await Sandbox.create(gvisor.opts);
    await sb.files.write("/tmp/www/hello.txt", "hello from the guest\n");
    await startInGuest(sb, ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/tmp/www"], 8000);
    const e = await sb.ports.expose(8000);
    assert.equal(e.port, 8000);
    assert.match(e.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${e.url}/hello.txt`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "hello from the guest\n");
    assert.equal((await fetch(`${e.url}/missing`)).status, 404);
    assert.deepEqual(await sb.ports.expose(8000), e, "exposing the same port again gives the same listener");
    assert.deepEqual(sb.ports.list(), [e]);
    // Several connections at once, each its own stream over the one channel (4: http.server's
    // listen backlog is 5, and a loaded guest that accepts late would reset the rest).
    const many = await Promise.all(Array.from({ length: 4 }, () => fetch(`${e.url}/hello.txt`).then((r) => r.text())));
    assert.ok(many.every((t) => t === "hello from the guest\n"));
    await sb.ports.close(8000);
    await sb.ports.close(8000); // idempotent
    assert.deepEqual(sb.ports.list(), []);
    assert.equal(await listening(hostPort(e.url)), false, "the closed port's listener is gone");
    const again = await sb.ports.expose(8000);
    assert.equal((await fetch(`${again.url}/hello.txt`)).status, 200, "a closed port can be exposed again");
  });

  it("raw TCP both ways: 3 MiB echoed through many flow-control windows, with half-close; a refused port closes the host socket", async () => {
    await using sb = await Sandbox.create(gvisor.opts);
    await startGuestApp(sb, "tcp", 7000);
    const { url } = await sb.ports.expose(7000);
    const data = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 11)) & 0xff;
    const back = await roundTrip(hostPort(url), data);
    assert.equal(back.length, data.length);
    assert.ok(back.equals(data), "the echo is byte for byte what was sent");

    // Nothing listens on 7001: the connection is accepted on the host, then closed without data.
    const closed = await sb.ports.expose(7001);
    assert.equal((await roundTrip(hostPort(closed.url), Buffer.from("anyone?")).catch(() => Buffer.alloc(0))).length, 0);
    await assert.rejects(sb.ports.connect(7001), (e: unknown) => e instanceof PortConnectError && e.port === 7001 && /ECONNREFUSED/.test(e.message));
    // The sandbox is unharmed by the refusal.
    assert.equal((await roundTrip(hostPort(url), Buffer.from("still here"))).toString(), "still here");
    await assert.rejects(sb.ports.expose(0), InvalidOptionsError);
    await assert.rejects(sb.ports.expose(65536), InvalidOptionsError);
    await assert.rejects(sb.ports.expose(80.5), InvalidOptionsError);
  });

  it("a listener survives a snapshot (which swaps the gVisor sandbox for its restored self) and forwards to the live one", async () => {
    await using sb = await Sandbox.create(gvisor.opts);
    await startGuestApp(sb, "tcp", 7000);
    const { url } = await sb.ports.expose(7000);
    assert.equal((await roundTrip(hostPort(url), Buffer.from("before"))).toString(), "before");
    const snap = await sb.snapshot();
    try {
      assert.equal((await roundTrip(hostPort(url), Buffer.from("after"))).toString(), "after");
      assert.deepEqual(sb.ports.list(), [{ port: 7000, url }]);
    } finally {
      await snap.remove();
    }
  });

  it("no listener outlives its sandbox: kill closes them (and cuts open connections); later exposes are refused", async () => {
    const sb = await Sandbox.create(gvisor.opts);
    await startGuestApp(sb, "tcp", 7000);
    const a = await sb.ports.expose(7000);
    const b = await sb.ports.expose(7001);
    const open = net.connect({ host: "127.0.0.1", port: hostPort(a.url) });
    await new Promise((r) => open.once("connect", r));
    const ended = new Promise((r) => open.once("close", r));
    await sb.kill();
    assert.equal(await listening(hostPort(a.url)), false);
    assert.equal(await listening(hostPort(b.url)), false);
    await ended; // the open connection was cut too
    assert.deepEqual(sb.ports.list(), []);
    await assert.rejects(sb.ports.expose(7000), SandboxClosedError);
  });

  it("a sandbox that dies (its runsc process killed) closes its listeners", async () => {
    const sb = await Sandbox.create(gvisor.opts);
    try {
      await startGuestApp(sb, "tcp", 7000);
      const { url } = await sb.ports.expose(7000);
      assert.equal(await listening(hostPort(url)), true);
      process.kill(sb.pid!, "SIGKILL");
      assert.ok(await waitFor(() => sb.closed, 10_000), "the sandbox noticed its death");
      const gone = async () => !(await listening(hostPort(url)));
      let ok = false;
      for (let i = 0; i < 50 && !(ok = await gone()); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(ok, "the listener closed with the sandbox");
    } finally {
      await sb.kill();
    }
  });

  it("the nano tier refuses with TierUnavailableError; tier auto refuses until it runs on the heavy tier", async () => {
    await using nano = await Sandbox.create({ tier: "nano", language: "javascript" });
    await assert.rejects(nano.ports.expose(8000), (e: unknown) => e instanceof TierUnavailableError && /tier: "heavy"/.test(e.message));
    assert.deepEqual(nano.ports.list(), []);
    await using auto = await Sandbox.create({ tier: "auto", language: "python", pool: false, limits: { memoryMb: 256 } });
    await assert.rejects(auto.ports.expose(8000), (e: unknown) => e instanceof TierUnavailableError && /still runs on the nano tier/.test(e.message));
    await startGuestApp(auto, "tcp", 7000); // commands.run moves it to the heavy tier
    const { url } = await auto.ports.expose(7000);
    assert.equal((await roundTrip(hostPort(url), Buffer.from("auto"))).toString(), "auto");
  });
});

describe("exposed ports (microVM)", { skip: microvm.skip }, () => {
  before(() => microvm.prepare());

  it("expose forwards to a guest HTTP server in the VM; kill closes the listener", async () => {
    const sb = await Sandbox.create(microvm.opts);
    try {
      await sb.files.write("/tmp/www/hello.txt", "hello from the VM\n");
      await startInGuest(sb, ["python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/tmp/www"], 8000);
      const e = await sb.ports.expose(8000);
      const res = await fetch(`${e.url}/hello.txt`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "hello from the VM\n");
      await sb.kill();
      assert.equal(await listening(hostPort(e.url)), false);
    } finally {
      await sb.kill();
    }
  });
});
