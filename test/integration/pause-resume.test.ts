// sb.pause() / resume() in the library: the sandbox is saved and its process ended (its memory
// freed), it keeps its id, and the next operation (or resume(), Sandbox.resume(id),
// Sandbox.connect(id)) brings it back exactly: variables, imports, files, the seeded random stream
// (nano), and the processes the guest left running (heavy).
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { Sandbox, SandboxClosedError } from "../../src/index.js";
import "../helpers.js";
import { gvisor, microvm, type HeavyBackend } from "../conformance/heavy.js";
import { alive } from "../microvm.js";

describe("pause and resume (nano)", () => {
  for (const language of ["python", "javascript"] as const) {
    it(`${language}: the process ends; the next run brings it back with its state and the same random stream`, async () => {
      const py = language === "python";
      const setup = py ? "import json, random\nstate = {'n': 41}\nopen('/tmp/kept.txt', 'w').write('kept')" : "globalThis.state = { n: 41 }";
      const next = py ? "(state['n'] + 1, open('/tmp/kept.txt').read(), random.random())" : "[state.n + 1, Math.random()].join(' ')";
      await using twin = await Sandbox.create({ language, seed: 11 });
      await using sb = await Sandbox.create({ language, seed: 11 });
      for (const s of [twin, sb]) assert.equal((await s.runCode(setup)).error, undefined);
      const pid = sb.pid;
      await sb.pause();
      assert.equal(sb.paused, true);
      assert.equal(sb.closed, false, "paused is not closed");
      assert.ok(!alive(pid), "its worker process is gone");
      await sb.pause(); // idempotent
      const r = await sb.runCode(next);
      assert.equal(sb.paused, false, "a run resumed it");
      assert.equal(r.value, (await twin.runCode(next)).value, "the same state and random stream as a sandbox never paused");
      assert.notEqual(sb.pid, pid);
    });
  }

  it("the network log and its watchers carry across a pause", async (t) => {
    const server = http.createServer((_req, res) => res.end("ok"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    t.after(() => server.close());
    const port = (server.address() as AddressInfo).port;
    await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
    const seen: string[] = [];
    sb.network.watch((e) => seen.push(e.url));
    const get = `import urllib.request\nurllib.request.urlopen("http://127.0.0.1:${port}/a").read()`;
    assert.equal((await sb.runCode(get)).value, "b'ok'");
    await sb.pause();
    assert.equal((await sb.runCode(get.replace("/a", "/b"))).value, "b'ok'");
    assert.deepEqual(sb.network.log().map((e) => e.url), [`http://127.0.0.1:${port}/a`, `http://127.0.0.1:${port}/b`]);
    assert.deepEqual(seen, [`http://127.0.0.1:${port}/a`, `http://127.0.0.1:${port}/b`], "the watcher follows the resumed engine (the replay's own request is not recorded)");
  });

  it("Sandbox.connect(id) and Sandbox.resume(id) find this process's sandbox; a killed one is gone", async () => {
    const sb = await Sandbox.create({ language: "python" });
    await sb.runCode("x = 1");
    await sb.pause();
    assert.equal(await Sandbox.connect(sb.id), sb);
    assert.equal(sb.paused, false, "connect resumes");
    await sb.pause();
    assert.equal(await Sandbox.resume(sb.id), sb);
    assert.equal((await sb.runCode("x")).value, "1");
    await sb.pause();
    await sb.kill();
    assert.equal(await Sandbox.connect(sb.id), undefined);
    await assert.rejects(Sandbox.resume(sb.id), SandboxClosedError);
    await assert.rejects(sb.runCode("1"), SandboxClosedError);
  });
});

for (const backend of [gvisor, microvm] as HeavyBackend[]) {
  describe(`pause and resume (${backend.name})`, { skip: backend.skip }, () => {
    it("variables, files and a process the guest left running come back; the sandbox's process is gone while paused", async () => {
      await backend.prepare();
      await using sb = await Sandbox.create({ ...backend.opts });
      await sb.runCode("x = 41\nopen('/home/user/notes.txt', 'w').write('before pause')");
      // A process of the guest's own (not a background command: those refuse a pause).
      const started = await sb.runCode("import subprocess\np = subprocess.Popen(['sleep', '600'], start_new_session=True)\np.pid");
      const guestPid = started.value;
      const pid = sb.pid;
      await sb.pause();
      assert.equal(sb.paused, true);
      assert.ok(!alive(pid), `the ${backend.name} process is gone while paused`);
      const r = await sb.runCode(`import os\n(x + 1, open('/home/user/notes.txt').read(), os.path.exists('/proc/${guestPid}'))`);
      assert.equal(r.value, "(42, 'before pause', True)");
      assert.equal(sb.paused, false);
    });
  });
}
