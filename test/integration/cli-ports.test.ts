// `agentbox exec --expose PORT -- SERVER...`, for real on gVisor: the CLI prints the forwarded URL
// to stderr, the server answers through it while the command runs, and Ctrl-C (SIGINT) stops the
// command and the sandbox (exit 130, no sandbox left behind).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { before, describe, it } from "node:test";
import { agentboxEnv } from "../helpers.js";
import { ensureImage, leftovers, skipHeavy } from "../heavy.js";
import { BIN, heavyBoxesOf } from "../server-helpers.js";

describe("CLI: exec --expose (gVisor)", { skip: skipHeavy }, () => {
  before(() => ensureImage());

  it("prints the URL, serves through it until Ctrl-C, then exits 130 leaving nothing behind", async () => {
    const c = spawn(process.execPath, [BIN, "exec", "--expose", "8000", "--", "python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/etc"], {
      env: agentboxEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      const end = Date.now() + 60_000;
      let url: string | undefined;
      while (!(url = /port 8000 of the sandbox is at (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1])) {
        assert.ok(Date.now() < end && c.exitCode === null, `no URL printed: ${stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      let body = "";
      // Until the server in the sandbox listens, connections are closed: retry.
      while (!body.includes("sandbox")) {
        assert.ok(Date.now() < end, `no answer through ${url}: ${stderr}`);
        // Each attempt bounded: one whose connection died mid-answer must not wait forever (seen once).
        body = await fetch(`${url}/hostname`, { signal: AbortSignal.timeout(5000) }).then((r) => r.text(), () => "").catch(() => "");
        if (!body) await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(body, "sandbox\n");
      const boxes = heavyBoxesOf(c.pid!);
      assert.equal(boxes.length, 1);
      c.kill("SIGINT");
      const [code] = (await once(c, "exit")) as [number | null];
      assert.equal(code, 130, stderr);
      assert.match(stderr, /stopped \(SIGINT\)/);
      assert.deepEqual(leftovers(boxes[0]!), { processes: [], dir: false, cgroups: [] });
      assert.equal(await fetch(url).then(() => "answered", () => "refused"), "refused");
    } finally {
      if (c.exitCode === null) c.kill("SIGKILL");
    }
  });
});
