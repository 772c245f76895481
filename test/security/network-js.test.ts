// A network grant gives the guest a `fetch`, never the worker a network: the worker of a sandbox
// with a grant still lives in a network namespace of its own, and the connection the test's
// server receives belongs to the host process.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
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

describe("security (js): the network grant does not give the worker a network", () => {
  it("the worker stays in its own empty network namespace; the host makes the connection", async (t) => {
    const iso = networkIsolation();
    if (iso.mode === "none" || process.platform !== "linux") {
      t.skip(`network namespaces unavailable here: ${iso.reason ?? process.platform}`);
      return;
    }
    let owner: "host" | "other" | undefined;
    const server = http.createServer((req, res) => {
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
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    try {
      await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`127.0.0.1:${port}`] } });
      assert.notEqual(fs.readlinkSync(`/proc/${sb.pid}/ns/net`), fs.readlinkSync("/proc/self/ns/net"));
      const ifaces = fs.readFileSync(`/proc/${sb.pid}/net/dev`, "utf8").split("\n").slice(2).filter(Boolean).map((l) => l.split(":")[0]!.trim());
      assert.deepEqual(ifaces, ["lo"], "no interface but a down loopback");
      const r = await sb.runCode(`await (await fetch("http://127.0.0.1:${port}/")).text()`);
      assert.equal(r.value, '"hi"', r.error?.traceback);
      assert.equal(owner, "host", "the client socket is one of the host process's file descriptors");
      const cmdline = fs.readFileSync(`/proc/${sb.pid}/cmdline`, "utf8");
      assert.doesNotMatch(cmdline, /allow-net|allow-addons|allow-child-process/);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
