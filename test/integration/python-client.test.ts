// The Python client's own unittest suite (clients/python/tests) against a real `agentbox serve`
// started here (granting network to an HTTP server on 127.0.0.1 that this test runs); afterwards neither key has a sandbox left and the server exits cleanly. Its
// commands tests need the heavy tier: where gVisor can run they must run (not skip).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { agentboxEnv, isAlive, waitGone } from "../helpers.js";
import { ensureDataImage, ensureImage, skipHeavy } from "../heavy.js";
import { childPids, spawnServer } from "../server-helpers.js";

const CLIENT_DIR = fileURLToPath(new URL("../../clients/python", import.meta.url));
const hasPython = spawnSync("python3", ["--version"]).status === 0;

describe("Python client (clients/python)", () => {
  it("passes its unittest suite against a live server", { skip: !hasPython && "python3 not found" }, async () => {
    const KEY = "py-client-key-one-0123456789";
    const KEY2 = "py-client-key-two-0123456789";
    const keys = { keys: [{ name: "one", key: KEY, maxSandboxes: 4, maxRunMs: 60_000 }, { name: "two", key: KEY2, maxSandboxes: 1 }] };
    if (!skipHeavy) await Promise.all([ensureImage(), ensureDataImage()]);
    const net = http.createServer((_req, res) => res.end("hi"));
    await new Promise<void>((r) => net.listen(0, "127.0.0.1", r));
    const netPort = (net.address() as AddressInfo).port;
    const { proc, url, stderr } = await spawnServer(["--pool", "1", "--allow-net", `127.0.0.1:${netPort}`, "--allow-net", `localhost:${netPort}`], { AGENTBOX_API_KEYS: JSON.stringify(keys) });
    try {
      const py = spawn("python3", ["-m", "unittest", "-v"], {
        cwd: CLIENT_DIR,
        env: { ...agentboxEnv(), AGENTBOX_TEST_URL: url, AGENTBOX_TEST_KEY: KEY, AGENTBOX_TEST_KEY2: KEY2, AGENTBOX_TEST_NET_PORT: String(netPort), AGENTBOX_TEST_DATA_IMAGE: skipHeavy ? "0" : "1", PYTHONDONTWRITEBYTECODE: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      py.stdout.on("data", (d: Buffer) => (out += d.toString()));
      py.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const [code] = (await once(py, "exit")) as [number | null];
      assert.equal(code, 0, out);
      assert.match(out, /Ran \d+ tests/);
      assert.match(out, /\nOK( \(skipped=\d+\))?\n/);
      const skipped = out.split("\n").filter((l) => / \.\.\. skipped /.test(l));
      for (const l of skipped) console.log(`# python: ${l}`);
      if (!skipHeavy) assert.deepEqual(skipped, [], "gVisor runs here, so the heavy-tier tests must run");
      for (const k of [KEY, KEY2]) {
        const r = await fetch(`${url}/sandboxes`, { headers: { authorization: `Bearer ${k}` } });
        assert.deepEqual(((await r.json()) as { sandboxes: unknown[] }).sandboxes, [], "the client's context managers killed every sandbox");
      }
    } finally {
      net.closeAllConnections();
      net.close();
      const workers = childPids(proc.pid);
      proc.kill("SIGTERM");
      const [code] = (await once(proc, "exit")) as [number | null];
      assert.equal(code, 0, stderr());
      for (const p of workers) await waitGone(p);
      assert.deepEqual(workers.filter(isAlive), []);
    }
  });
});
