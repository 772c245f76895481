// The fetch broker on the host, driven directly (no worker): the connection goes to the addresses
// that were checked and nowhere else (pinning: the name is resolved once per hop, by the broker),
// every redirect hop is checked again, and every attempt lands in the log. Servers are on loopback;
// names are mapped by each test's own resolver, and "the internet" of the first test is a
// stand-in that maps public addresses to loopback servers.
import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import zlib from "node:zlib";
import { FetchBroker, pinnedLookup, type FetchBrokerOptions, type Resolver } from "../../src/engines/pool/fetch-broker.js";
import { NetworkLog } from "../../src/engines/pool/network-log.js";
import { networkSchema, type NetworkGrantInput, type NetworkLogEntry } from "../../src/policy/network.js";
import type { FetchResult } from "../../src/protocol/messages.js";

type Seen = { url: string; headers: http.IncomingHttpHeaders };

/** A loopback server that records what reaches it; `routes` answer by path. */
async function serve(host: string, routes: Record<string, (res: http.ServerResponse) => void> = {}, port = 0) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url ?? "", headers: req.headers });
    const route = routes[(req.url ?? "").split("?")[0]!];
    if (route) route(res);
    else res.end(`hello from ${host}`);
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, resolve));
  return { seen, server, port: (server.address() as AddressInfo).port };
}

async function stop(server: http.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
}

let req = 0;
function fetchVia(b: FetchBroker, url: string, init: { method?: string; headers?: [string, string][]; body?: string } = {}): Promise<FetchResult> {
  return new Promise((resolve) =>
    b.handle(
      { type: "fetch", id: 1, req: ++req, url, method: init.method ?? "GET", headers: init.headers ?? [], ...(init.body !== undefined ? { body: Buffer.from(init.body).toString("base64") } : {}) },
      Date.now() + 10_000,
      resolve,
    ),
  );
}

const broker = (grant: NetworkGrantInput, opts: FetchBrokerOptions = {}) => new FetchBroker(networkSchema.parse({ timeoutMs: 3000, ...grant }), opts);

/** A resolver that answers from `answers` in turn (the last one repeats) and counts its calls. */
function scripted(answers: Record<string, string[][]>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const fn = async (host: string) => {
    calls.push(host);
    const list = answers[host];
    if (!list) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
    return list[Math.min(calls.filter((h) => h === host).length, list.length) - 1]!;
  };
  return Object.assign(fn, { calls });
}

const text = (r: FetchResult) => (r.ok ? Buffer.from(r.body, "base64").toString() : `${r.error.name}: ${r.error.message}`);

describe("fetch broker: pinning", () => {
  it("a resolver answering a public address, then a private one: the connection goes to the public one only", async () => {
    const publicSide = await serve("127.0.0.1");
    const privateSide = await serve("127.0.0.1");
    // The stand-in internet: the address the pinned lookup hands out decides which server answers.
    const internet = new Map([
      ["93.184.215.14", publicSide.port],
      ["10.0.0.5", privateSide.port],
    ]);
    const dialled: string[] = [];
    const createConnection: FetchBrokerOptions["createConnection"] = (options, _oncreate) => {
      const socket = new net.Socket();
      options.lookup!(String(options.host), { all: true }, (err, addresses) => {
        if (err) return socket.destroy(err);
        const address = (addresses as { address: string }[])[0]!.address;
        dialled.push(address);
        socket.connect(internet.get(address) ?? 9, "127.0.0.1");
      });
      return socket;
    };
    const resolve = scripted({ "rebind.test": [["93.184.215.14"], ["10.0.0.5"]] });
    const b = broker({ allow: ["rebind.test"] }, { resolve, createConnection });
    try {
      const r = await fetchVia(b, "http://rebind.test/x");
      assert.equal(text(r), "hello from 127.0.0.1");
      assert.deepEqual(dialled, ["93.184.215.14"]);
      assert.deepEqual(resolve.calls, ["rebind.test"], "resolved once, by the broker; the connection asked nothing else");
      assert.equal(privateSide.seen.length, 0);
      // The next request sees the private answer and is refused before any connection.
      const refused = await fetchVia(b, "http://rebind.test/y");
      assert.equal(text(refused), 'TypeError: fetch refused: rebind.test resolves to 10.0.0.5, a private address; add "10.0.0.5" to network.allow to permit it');
      assert.equal(!refused.ok && refused.error.code, "NETWORK_DENIED");
      assert.deepEqual(dialled, ["93.184.215.14"]);
      assert.equal(privateSide.seen.length, 0, "the private side was never reached");
      const log = b.log.entries();
      assert.deepEqual(
        log.map((e) => [e.decision, e.address, e.status]),
        [
          ["allowed", "93.184.215.14", 200],
          ["denied", null, null],
        ],
      );
      assert.equal(log[0]!.reason, "93.184.215.14 is public");
    } finally {
      await stop(publicSide.server);
      await stop(privateSide.server);
    }
  });

  it("real sockets: a name checked as a named loopback address never reaches another one it rebinds to", async () => {
    // 127.0.0.2 is loopback too (Linux routes all of 127/8 to lo) but not named in the grant.
    const other = await serve("127.0.0.2");
    const named = await serve("127.0.0.1", {}, other.port);
    const resolve = scripted({ "rebind.test": [["127.0.0.1"], ["127.0.0.2"]] });
    const b = broker({ allow: [`rebind.test:${named.port}`, `127.0.0.1:${named.port}`] }, { resolve });
    try {
      assert.equal(text(await fetchVia(b, `http://rebind.test:${named.port}/`)), "hello from 127.0.0.1");
      assert.equal(named.seen[0]!.headers.host, `rebind.test:${named.port}`, "Host names the name, the connection goes to the address");
      const refused = await fetchVia(b, `http://rebind.test:${named.port}/`);
      assert.match(text(refused), new RegExp(`rebind\\.test resolves to 127\\.0\\.0\\.2, a loopback address; add "127\\.0\\.0\\.2:${named.port}"`));
      assert.equal(other.seen.length, 0);
      assert.deepEqual(resolve.calls, ["rebind.test", "rebind.test"], "one lookup per request, none by the connection");
      assert.deepEqual(b.log.entries()[0]!.address, "127.0.0.1");
    } finally {
      await stop(named.server);
      await stop(other.server);
    }
  });

  it("pinnedLookup answers with the checked addresses only, by family, and never for another name", async () => {
    const lookup = pinnedLookup("a.test", ["::1", "127.0.0.1"]);
    const ask = (name: string, options: { all?: boolean; family?: number }) =>
      new Promise<unknown>((resolve) => lookup(name, options, (err, address, family) => resolve(err ? (err as NodeJS.ErrnoException).code : options.all ? address : [address, family])));
    assert.deepEqual(await ask("a.test", { all: true }), [
      { address: "::1", family: 6 },
      { address: "127.0.0.1", family: 4 },
    ]);
    assert.deepEqual(await ask("a.test", { family: 4 }), ["127.0.0.1", 4]);
    assert.deepEqual(await ask("a.test", {}), ["::1", 6]);
    assert.equal(await ask("b.test", { all: true }), "ENOTFOUND");
    assert.equal(await ask("a.test", { family: 6, all: true }).then((a) => (a as unknown[]).length), 1);
  });
});

describe("fetch broker: redirects, log, bodies", () => {
  let main: Awaited<ReturnType<typeof serve>>;
  const gzipped = zlib.gzipSync(Buffer.from("x".repeat(10_000)));
  before(async () => {
    main = await serve("127.0.0.1", {
      "/to-private-name": (res) => res.writeHead(302, { location: `http://db.test:${main.port}/secret` }).end(),
      "/to-named": (res) => res.writeHead(307, { location: `http://app.test:${main.port}/landed?k=v` }).end(),
      "/to-other-origin": (res) => res.writeHead(302, { location: `http://app.test:${main.port}/landed` }).end(),
      "/gzip": (res) => res.writeHead(200, { "content-encoding": "gzip", "content-length": gzipped.length }).end(gzipped),
      "/bomb": (res) => res.writeHead(200, { "content-encoding": "gzip" }).end(zlib.gzipSync(Buffer.alloc(5_000_000))),
      "/slow": (res) => void setTimeout(() => res.end("late"), 1000),
    });
  });
  after(() => stop(main.server));

  it("each hop is resolved and checked again: a redirect to a name resolving to a private address is stopped", async () => {
    const resolve = scripted({ "db.test": [["10.0.0.7"]], "app.test": [["127.0.0.1"]] });
    const b = broker({ allow: [`127.0.0.1:${main.port}`, `db.test:${main.port}`, `app.test:${main.port}`] }, { resolve });
    const before = main.seen.length;
    const r = await fetchVia(b, `http://127.0.0.1:${main.port}/to-private-name`);
    assert.equal(text(r), `TypeError: redirect from 127.0.0.1:${main.port} refused: db.test resolves to 10.0.0.7, a private address; add "10.0.0.7:${main.port}" to network.allow to permit it`);
    assert.equal(main.seen.length, before + 1, "only the first hop reached a server");
    const ok = await fetchVia(b, `http://127.0.0.1:${main.port}/to-named`);
    assert.ok(ok.ok && ok.redirected && ok.url === `http://app.test:${main.port}/landed?k=v`);
    assert.deepEqual(resolve.calls, ["db.test", "app.test"]);
    const log = b.log.entries();
    assert.deepEqual(
      log.map((e) => [e.hop, e.decision, e.host, e.status]),
      [
        [0, "allowed", "127.0.0.1", 302],
        [1, "denied", "db.test", null],
        [0, "allowed", "127.0.0.1", 307],
        [1, "allowed", "app.test", 200],
      ],
    );
    assert.equal(log[3]!.url, `http://app.test:${main.port}/landed`, "no query string in the log");
    assert.equal(log[3]!.address, "127.0.0.1");
    assert.match(log[3]!.reason, /127\.0\.0\.1 is named in network\.allow/);
  });

  it("credentials are not carried to another origin by a redirect", async () => {
    const b = broker({ allow: [`127.0.0.1:${main.port}`, `app.test:${main.port}`] }, { resolve: scripted({ "app.test": [["127.0.0.1"]] }) });
    const before = main.seen.length;
    await fetchVia(b, `http://127.0.0.1:${main.port}/to-other-origin`, { headers: [["Authorization", "Bearer k"], ["Cookie", "c=1"], ["X-Other", "kept"]] });
    const [first, second] = main.seen.slice(before);
    assert.equal(first!.headers.authorization, "Bearer k");
    assert.equal(second!.headers.authorization, undefined);
    assert.equal(second!.headers.cookie, undefined);
    assert.equal(second!.headers["x-other"], "kept");
  });

  it("every attempt is recorded, allowed or not, with bytes each way and no query, credentials or headers", async () => {
    const log = new NetworkLog();
    const seenLive: NetworkLogEntry[] = [];
    const stopWatching = log.watch((e) => seenLive.push(e));
    const b = broker({ allow: [`127.0.0.1:${main.port}`, "nowhere.test"], maxRequestBytes: 100 }, { log, resolve: scripted({}) });
    const posted = await fetchVia(b, `http://127.0.0.1:${main.port}/echo?token=secret`, { method: "POST", body: "hello", headers: [["Authorization", "Bearer secret"]] });
    assert.ok(posted.ok);
    await fetchVia(b, `http://user:pw@127.0.0.1:${main.port}/`);
    await fetchVia(b, "http://elsewhere.test/?q=secret");
    await fetchVia(b, "http://nowhere.test/");
    await fetchVia(b, `http://127.0.0.1:${main.port}/`, { method: "POST", body: "x".repeat(200) });
    stopWatching();
    const gz = await fetchVia(b, `http://127.0.0.1:${main.port}/gzip`);
    assert.equal(text(gz), "x".repeat(10_000), "decoded as fetch would");
    const entries = log.entries();
    assert.equal(seenLive.length, 5, "listeners see each entry as it is recorded, until they stop");
    assert.deepEqual(
      entries.map((e) => [e.method, e.url, e.decision, e.status, e.bytesSent]),
      [
        ["POST", `http://127.0.0.1:${main.port}/echo`, "allowed", 200, 5],
        ["GET", `http://127.0.0.1:${main.port}/`, "denied", null, 0],
        ["GET", "http://elsewhere.test/", "denied", null, 0],
        ["GET", "http://nowhere.test/", "error", null, 0],
        ["POST", `http://127.0.0.1:${main.port}/`, "denied", null, 0],
        ["GET", `http://127.0.0.1:${main.port}/gzip`, "allowed", 200, 0],
      ],
    );
    assert.equal(entries[1]!.reason, "URLs with credentials (user:password@) are not allowed");
    assert.equal(entries[2]!.reason, "http://elsewhere.test:80 is not in the sandbox's network grant (network.allow)");
    assert.match(entries[3]!.reason, /nowhere\.test could not be resolved \(ENOTFOUND\)/);
    assert.match(entries[4]!.reason, /network\.maxRequestBytes \(100\)/);
    assert.equal(entries[5]!.bytesReceived, gzipped.length, "bytes as they came over the wire");
    assert.ok(entries[0]!.bytesReceived > 0 && entries[0]!.durationMs >= 0 && !Number.isNaN(Date.parse(entries[0]!.time)));
    assert.doesNotMatch(JSON.stringify(entries), /secret|user:pw/);
    assert.ok(Object.isFrozen(entries[0]));
  });

  it("a compressed response is capped on what it decodes to", async () => {
    const b = broker({ allow: [`127.0.0.1:${main.port}`], maxResponseBytes: 100_000 });
    const r = await fetchVia(b, `http://127.0.0.1:${main.port}/bomb`);
    assert.equal(text(r), `RangeError: fetch: the response from 127.0.0.1:${main.port} is larger than network.maxResponseBytes (100000 bytes)`);
    const [e] = b.log.entries();
    assert.equal(e!.decision, "allowed");
    assert.match(e!.error ?? "", /maxResponseBytes/);
  });

  it("an unparsable URL is logged without the guest's string; requests cut off by the end of the run are logged too", async () => {
    const b = broker({ allow: [`127.0.0.1:${main.port}`], maxConcurrent: 1 });
    assert.match(text(await fetchVia(b, "not a url?token=secret")), /is not an absolute URL/);
    const inFlight = fetchVia(b, `http://127.0.0.1:${main.port}/slow`);
    const queued = fetchVia(b, `http://127.0.0.1:${main.port}/slow?n=2`);
    while (b.log.entries().length < 1 || main.seen.filter((x) => x.url === "/slow").length < 1) await new Promise((r) => setTimeout(r, 5));
    b.endRun();
    const answered = await Promise.race([Promise.all([inFlight, queued]).then(() => "answered"), new Promise((r) => setTimeout(() => r("dropped"), 300))]);
    assert.equal(answered, "dropped", "answers for a run that ended are not delivered");
    // Each is recorded as it ends (the queued one first); sorted by decision here.
    assert.deepEqual(
      b.log.entries().map((e) => [e.url, e.decision, e.reason, e.error]).sort((x, y) => String(x[1]).localeCompare(String(y[1]))),
      [
        [`http://127.0.0.1:${main.port}/slow`, "allowed", `127.0.0.1 is named in network.allow ("127.0.0.1:${main.port}")`, "fetch: the run ended"],
        ["", "denied", "not an absolute URL", undefined],
        [`http://127.0.0.1:${main.port}/slow`, "error", "the run ended before the request was sent", undefined],
      ],
    );
  });

  it("the ring keeps the most recent entries, oldest first", () => {
    const log = new NetworkLog(3);
    const entry = (n: number): NetworkLogEntry => ({ time: new Date(0).toISOString(), method: "GET", url: `http://a.test/${n}`, host: "a.test", port: 80, address: null, hop: 0, decision: "denied", reason: "r", status: null, bytesSent: 0, bytesReceived: 0, durationMs: 0 });
    for (let n = 1; n <= 5; n++) log.add(entry(n));
    assert.deepEqual(log.entries().map((e) => e.url.slice(-1)), ["3", "4", "5"]);
    log.add(entry(6));
    assert.deepEqual(log.entries().map((e) => e.url.slice(-1)), ["4", "5", "6"]);
  });
});
