import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { agentboxEnv } from "../helpers.js";

const BIN = fileURLToPath(new URL("../../bin/agentbox.js", import.meta.url));
const EXAMPLE = fileURLToPath(new URL("../../examples/analyze.py", import.meta.url));
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000, env: agentboxEnv() });

describe("agentbox CLI", () => {
  it("runs -c code: exit 0, output on stdout", () => {
    const r = cli("run", "-c", "import sys; print(sys.version_info[0])");
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "3\n");
  });

  it("runs the example file with limits and a seed, reproducibly", () => {
    const a = cli("run", EXAMPLE, "--memory", "128", "--timeout", "5s", "--seed", "7");
    const b = cli("run", EXAMPLE, "--memory", "128", "--timeout", "5s", "--seed", "7");
    assert.equal(a.status, 0, a.stderr);
    assert.match(a.stdout, /"visits_mean"/);
    assert.equal(a.stdout, b.stdout);
  });

  it("exit 1 with the traceback on stderr when the code raises", () => {
    const r = cli("run", "-c", "raise ValueError('nope')");
    assert.equal(r.status, 1);
    assert.match(r.stderr, /ValueError: nope/);
  });

  it("exit 2 when a limit is hit", () => {
    assert.equal(cli("run", "-c", "while True: pass", "--timeout", "300ms").status, 2);
    assert.equal(cli("run", "-c", "x = bytearray(500 * 2**20)", "--memory", "64").status, 2);
  });

  it("--json keeps what the code printed before a limit killed its worker", () => {
    const r = cli("run", "--json", "--timeout", "300ms", "-c", "print('before')\nwhile True:\n    try:\n        while True: pass\n    except BaseException:\n        pass");
    assert.equal(r.status, 2, r.stderr);
    const j = JSON.parse(r.stdout) as { error: { name: string }; stdout: string; stderr: string; limitHit: string; exitCode: number };
    assert.deepEqual({ ...j, error: j.error.name }, { error: "TimeoutError", stdout: "before\n", stderr: "", limitHit: "timeoutMs", exitCode: 2 });
  });

  it("--allow-net gives a JavaScript guest fetch() and Python urllib to that host only", async () => {
    const server = http.createServer((_req, res) => res.end("pong")).listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    const port = (server.address() as AddressInfo).port;
    // Asynchronous: the test's own server must keep answering while the CLI runs.
    const run = (...args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000, env: agentboxEnv() }, (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
        );
      });
    try {
      const code = `const r = await fetch("http://127.0.0.1:${port}/"); await r.text()`;
      const ok = await run("run", "--language", "javascript", "--allow-net", `127.0.0.1:${port}`, "-c", code);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout, '"pong"\n');
      const none = await run("run", "--language", "javascript", "-c", code);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /'fetch' is not defined/);
      const other = await run("run", "--language", "javascript", "--allow-net", "127.0.0.1:1", "-c", code);
      assert.equal(other.code, 1);
      assert.match(other.stderr, /not in the sandbox's network grant/);
      const py = `import urllib.request\nurllib.request.urlopen("http://127.0.0.1:${port}/").read().decode()`;
      const pyOk = await run("run", "--allow-net", `127.0.0.1:${port}`, "-c", py);
      assert.equal(pyOk.code, 0, pyOk.stderr);
      assert.equal(pyOk.stdout, "'pong'\n");
      const pyNone = await run("run", "-c", py);
      assert.equal(pyNone.code, 1);
      assert.match(pyNone.stderr, /URLError/);
    } finally {
      server.close();
    }
  });

  it("exit 64 on bad usage", () => {
    assert.equal(cli("run").status, 64);
    assert.equal(cli("run", "/no/such/file.py").status, 64);
    assert.equal(cli("run", "-c", "1", "--mount", "nonsense").status, 64);
  });

  it("--json gives the whole result as one object", () => {
    const r = cli("run", "-c", "print('hi')\n6 * 7", "--json", "--seed", "3");
    const j = JSON.parse(r.stdout);
    assert.equal(j.stdout, "hi\n");
    assert.equal(j.value, "42");
    assert.equal(j.seed, 3);
    assert.match(j.vfsDigest, /^[0-9a-f]{64}$/);
  });

  it("--mount makes a host directory readable", () => {
    const dir = fileURLToPath(new URL("../../examples", import.meta.url));
    const r = cli("run", "-c", "print(open('/mnt/ex/analyze.py').read()[:1])", "--mount", `${dir}:/mnt/ex`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "#\n");
  });
});
