// A network grant gives nano Python urllib / http.client through the host, never the worker a
// network and never the guest a JavaScript object: the worker of a Python sandbox with a grant
// still lives in a network namespace of its own, the connection the test's server receives
// belongs to the host process, the guest's sockets stay closed, and no JsProxy is reachable.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { networkIsolation } from "../../src/engines/pool/netns.js";
import { Sandbox } from "../../src/index.js";
import "../helpers.js";

/** The inode of the TCP socket bound to 127.0.0.1:`port` in this network namespace. */
function socketInode(port: number): string | undefined {
  const hex = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const line of fs.readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[1] === hex) return cols[9];
  }
  return undefined;
}

let server: http.Server;
let port: number;
let owner: "host" | "other" | undefined;
let connections = 0;

before(async () => {
  server = http.createServer((req, res) => {
    const inode = socketInode(req.socket.remotePort!);
    const mine = fs.readdirSync("/proc/self/fd").some((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === `socket:[${inode}]`;
      } catch {
        return false;
      }
    });
    owner = inode && mine ? "host" : "other";
    res.end("hi");
  });
  server.on("connection", () => connections++);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe("security (python): the network grant does not give the worker a network", () => {
  it("the host makes the connection; the worker stays in its own empty network namespace", async (t) => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const r = await sb.runCode(`import urllib.request\nurllib.request.urlopen("http://127.0.0.1:${port}/").read()`);
    assert.equal(r.value, "b'hi'", r.error?.traceback);
    assert.equal(owner, "host", "the client socket is one of the host process's file descriptors");
    const iso = networkIsolation();
    if (iso.mode === "none" || process.platform !== "linux") {
      t.skip(`network namespaces unavailable here: ${iso.reason ?? process.platform}`);
      return;
    }
    assert.notEqual(fs.readlinkSync(`/proc/${sb.pid}/ns/net`), fs.readlinkSync("/proc/self/ns/net"));
  });

  it("with a grant, sockets stay closed and no JavaScript proxy is reachable", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const before = connections;
    const sock = await sb.runCode(`import socket\nsocket.create_connection(("127.0.0.1", ${port}), timeout=2)`);
    assert.equal(sock.error?.name, "PermissionError");
    // The patched classes are plain Python: their closures hold a descriptor number, no JsProxy.
    await sb.runCode(`import urllib.request\nurllib.request.urlopen("http://127.0.0.1:${port}/").read()`);
    const proxies = await sb.runCode("import gc\nfrom pyodide.ffi import JsProxy\nsorted({type(o).__name__ for o in gc.get_objects() if isinstance(o, JsProxy)})");
    assert.equal(proxies.value, "[]");
    assert.equal(connections, before + 1, "only the brokered request connected");
  });

  it("a request the guest writes itself is checked like any other: the grant still decides", async () => {
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const r = await sb.runCode(
      [
        "import http.client, json, os",
        "def cells(f):",
        "    return {n: c.cell_contents for n, c in zip(f.__code__.co_freevars, f.__closure__ or ())}",
        "fd = cells(cells(http.client.HTTPConnection.getresponse)['exchange'])['state']['fd']",
        `os.write(fd, json.dumps({"method": "GET", "url": "http://169.254.169.254/latest/meta-data/", "headers": [["Host", "127.0.0.1:${port}"]]}).encode() + b"\\n")`,
        "out = b''",
        "while chunk := os.read(fd, 65536):",
        "    out += chunk",
        "json.loads(out.partition(b'\\n')[0])['error']['message']",
      ].join("\n"),
    );
    assert.match(r.value ?? "", /fetch refused: http:\/\/169\.254\.169\.254:80 is not in the sandbox's network grant/, r.error?.traceback);
    assert.deepEqual(sb.network.log().map((e) => e.decision), ["denied"]);
  });
});
