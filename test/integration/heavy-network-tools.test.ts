// The tools agents fetch with, unchanged, inside a heavy sandbox (gVisor, data image) through the
// host's egress proxy: curl, pip installing from a package index, git cloning over HTTPS. All
// servers are the test's own on 127.0.0.1, reached by names mapped in the test's resolver (the
// host's dns.lookup, mocked) and granted with the loopback address named.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import dns from "node:dns/promises";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it, mock } from "node:test";
import { Sandbox } from "../../src/index.js";
import { createSandboxCa } from "../../src/policy/tls-ca.js";
import "../helpers.js";
import { ensureDataImage, skipHeavy } from "../heavy.js";

/** Serve the files under `root` (GET only), as a static web server does. */
function staticFiles(root: string): http.RequestListener {
  return (req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const file = path.join(root, rel);
    if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404);
      return void res.end();
    }
    res.writeHead(200, { "content-type": file.endsWith(".html") ? "text/html" : "application/octet-stream" });
    res.end(fs.readFileSync(file));
  };
}

describe("heavy tier network tools: curl, pip, git (gVisor, data image)", { skip: skipHeavy }, () => {
  let dir: string;
  const servers: http.Server[] = [];
  let pypi = 0;
  let gitPort = 0;
  let ca = "";
  const lookup = dns.lookup;

  before(async () => {
    await ensureDataImage();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-net-tools-"));
    // A package index (PEP 503 "simple") with one pure-Python wheel, built here.
    const index = path.join(dir, "index");
    fs.mkdirSync(path.join(index, "simple", "agentbox-demo"), { recursive: true });
    const wheel = "agentbox_demo-1.0-py3-none-any.whl";
    execFileSync("python3", [
      "-c",
      `import zipfile, sys
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("agentbox_demo/__init__.py", "VALUE = 42\\n")
    z.writestr("agentbox_demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\\nName: agentbox-demo\\nVersion: 1.0\\n")
    z.writestr("agentbox_demo-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\\nGenerator: agentbox-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
    z.writestr("agentbox_demo-1.0.dist-info/RECORD", "agentbox_demo/__init__.py,,\\nagentbox_demo-1.0.dist-info/METADATA,,\\nagentbox_demo-1.0.dist-info/WHEEL,,\\nagentbox_demo-1.0.dist-info/RECORD,,\\n")`,
      path.join(index, "simple", "agentbox-demo", wheel),
    ]);
    fs.writeFileSync(path.join(index, "simple", "agentbox-demo", "index.html"), `<html><body><a href="${wheel}">${wheel}</a></body></html>\n`);
    const indexHandler = staticFiles(index);
    const pypiServer = http.createServer((req, res) => {
      if (req.url?.endsWith("/")) req.url += "index.html";
      indexHandler(req, res);
    });
    // A git repository served over HTTPS the "dumb" way: its files, after update-server-info.
    const work = path.join(dir, "work");
    const git = (...args: string[]) => execFileSync("git", args, { cwd: work, env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t", HOME: dir } });
    fs.mkdirSync(work);
    git("init", "-q", "-b", "main");
    fs.writeFileSync(path.join(work, "README"), "cloned through the proxy\n");
    git("add", "README");
    git("commit", "-q", "-m", "first");
    git("clone", "-q", "--bare", work, path.join(dir, "repos", "demo.git"));
    execFileSync("git", ["update-server-info"], { cwd: path.join(dir, "repos", "demo.git") });
    // Its certificate from a CA of the test's own, which the guest is told to trust for git.
    const testCa = createSandboxCa("agentbox test CA");
    ca = testCa.caPem;
    const gitServer = https.createServer({ SNICallback: (name, cb) => cb(null, testCa.secureContextFor(name)) }, staticFiles(path.join(dir, "repos")));
    for (const s of [pypiServer, gitServer]) {
      await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
      servers.push(s);
    }
    pypi = (pypiServer.address() as AddressInfo).port;
    gitPort = (gitServer.address() as AddressInfo).port;
    const names: Record<string, string> = { "pypi.test": "127.0.0.1", "git.test": "127.0.0.1" };
    mock.method(dns, "lookup", async (host: string, options: object) => (host in names ? [{ address: names[host], family: 4 }] : (lookup as (h: string, o: object) => Promise<unknown>)(host, options)));
  });

  after(() => {
    mock.restoreAll();
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("curl, pip install from an index, git clone over HTTPS: through the proxy, each connection in the log", async () => {
    await using sb = await Sandbox.create({
      tier: "heavy",
      backend: "gvisor",
      image: "data",
      pool: false,
      limits: { timeoutMs: 120_000 },
      network: { allow: [`pypi.test:${pypi}`, `127.0.0.1:${pypi}`, `git.test:${gitPort}`, `127.0.0.1:${gitPort}`] },
    });
    const curl = await sb.commands.run(`curl -sS http://pypi.test:${pypi}/simple/agentbox-demo/`);
    assert.equal(curl.exitCode, 0, curl.stderr);
    assert.match(curl.stdout, /agentbox_demo-1\.0-py3-none-any\.whl/);

    const pip = await sb.commands.run(`pip install --index-url http://pypi.test:${pypi}/simple/ --trusted-host pypi.test agentbox-demo`);
    assert.equal(pip.exitCode, 0, pip.stdout + pip.stderr);
    const imported = await sb.commands.run(["python3", "-c", "import agentbox_demo; print(agentbox_demo.VALUE, agentbox_demo.__file__)"]);
    assert.match(imported.stdout, /^42 \/home\/user\/\.local\/lib\/python3\.\d+\/site-packages\/agentbox_demo\/__init__\.py\n$/, imported.stderr);

    await sb.files.write("/tmp/test-ca.pem", ca);
    const clone = await sb.commands.run(`GIT_SSL_CAINFO=/tmp/test-ca.pem git clone -q https://git.test:${gitPort}/demo.git /home/user/demo && cat /home/user/demo/README`);
    assert.equal(clone.exitCode, 0, clone.stderr);
    assert.equal(clone.stdout, "cloned through the proxy\n");

    // A host not granted: curl reports the proxy's refusal; nothing else is reachable.
    const refused = await sb.commands.run("curl -sS -o /dev/null -w '%{http_code}' http://example.com/");
    assert.equal(refused.stdout, "403");

    const log = sb.network.log();
    assert.ok(log.some((e) => e.method === "GET" && e.host === "pypi.test" && e.decision === "allowed" && e.url.endsWith(".whl")), "pip's wheel download was logged");
    assert.ok(log.some((e) => e.method === "CONNECT" && e.url === `git.test:${gitPort}` && e.decision === "allowed" && e.bytesReceived > 0), "git's tunnel was logged");
    assert.ok(log.some((e) => e.host === "example.com" && e.decision === "denied"));
  });
});
