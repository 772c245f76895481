// Background commands (`commands.run(cmd, { background: true })`) on both heavy backends: a guest
// HTTP server started, listed, serving a foreground command and runCode while it runs (so it holds
// no lock and outlives the call that started it), its output streamed, killed, waited for; the
// sandbox's end rejects wait(). gVisor gets the full set of cases; the microVM (TCG here: slow)
// the core one.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { AgentboxError, CommandHandle, InvalidOptionsError, Sandbox, TierUnavailableError } from "../../src/index.js";
import { gvisor, microvm, type HeavyBackend } from "../conformance/heavy.js";
import { waitFor } from "../heavy.js";

/**
 * How the foreground side reaches the background server: TCP on the guest's loopback (gVisor), or
 * a Unix socket (the microVM's guest does not bring its loopback interface up).
 */
type Transport = "tcp" | "unix";
const PORT = 8765;
const SOCK = "/tmp/www.sock";

/** The background server: http.server in /tmp/www; it prints "Serving HTTP" once it listens and logs each request on stderr. */
function serverCmd(t: Transport): string {
  if (t === "tcp") return `exec python3 -u -m http.server ${PORT} --bind 127.0.0.1`;
  const py = [
    "import http.server, socketserver",
    "class H(http.server.SimpleHTTPRequestHandler):",
    "    def address_string(self): return 'unix'",
    `s = socketserver.UnixStreamServer('${SOCK}', H)`,
    `print('Serving HTTP on ${SOCK}', flush=True)`,
    "s.serve_forever()",
  ].join("\n");
  return `exec python3 -u -c "${py}"`;
}

/** A foreground Python that fetches /hello.txt from the background server (retrying while it starts). */
function fetchCode(t: Transport): string {
  const open =
    t === "tcp"
      ? `urllib.request.urlopen("http://127.0.0.1:${PORT}/hello.txt", timeout=30).read()`
      : `get_unix()`;
  return `
import http.client, socket, sys, time, urllib.request
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("${SOCK}")
def get_unix():
    c = C("localhost", timeout=30)
    c.request("GET", "/hello.txt")
    return c.getresponse().read()
for i in range(100):
    try:
        print(${open}.decode(), end="")
        break
    except OSError as e:
        err = e
        time.sleep(0.2)
else:
    print(err, file=sys.stderr)
`;
}

/** The core case, the same on every backend. */
async function serverCase(sb: Sandbox, t: Transport): Promise<void> {
  await sb.files.write("/tmp/www/hello.txt", "hello from the guest\n");
  const streamed: string[] = [];
  const cmd = serverCmd(t);
  const h = await sb.commands.run(cmd, { background: true, cwd: "/tmp/www", onStdout: (c) => streamed.push(c) });
  assert.ok(h instanceof CommandHandle);
  assert.ok(Number.isInteger(h.pid) && h.pid > 0);
  assert.equal(h.running, true);
  const listed = sb.commands.list();
  assert.deepEqual(listed.map((c) => [c.pid, c.cmd, c.cwd]), [[h.pid, cmd, "/tmp/www"]]);
  assert.ok(listed[0]!.startedAt instanceof Date);

  // Listening (under TCG the VM takes seconds to start Python), the output streamed as it came.
  assert.ok(await waitFor(() => streamed.join("").includes("Serving HTTP on"), 120_000), streamed.join("") + h.stderr);
  // A foreground command and runCode proceed while it runs, and reach it.
  const fetch = fetchCode(t);
  const fg = await sb.commands.run(["python3", "-c", fetch], { timeoutMs: 60_000 });
  assert.equal(fg.stdout, "hello from the guest\n", fg.stderr);
  const r = await sb.runCode(fetch, { timeoutMs: 60_000 });
  assert.equal(r.stdout, "hello from the guest\n", r.error?.message ?? r.stderr);
  assert.equal(await sb.files.read("/tmp/www/hello.txt"), "hello from the guest\n");
  // The pid is the guest's: the command's process is there (exec: bash became python3).
  const ps = await sb.commands.run(`cat /proc/${h.pid}/cmdline | tr '\\0' ' '`);
  assert.match(ps.stdout, /^python3 -u /);

  // Output captured so far (http.server logs requests on stderr).
  assert.ok(await waitFor(() => (h.stderr.match(/GET \/hello\.txt/g) ?? []).length === 2), h.stderr);
  assert.match(h.stdout, /Serving HTTP on/);
  assert.equal(h.running, true);
  assert.equal(h.exitCode, undefined);

  assert.equal(await h.kill(), true);
  const res = await h.wait();
  assert.equal(res.signal, "SIGKILL");
  assert.equal(res.exitCode, 137);
  assert.match(res.stdout, /Serving HTTP/);
  assert.equal(h.running, false);
  assert.deepEqual(sb.commands.list(), []);
  assert.equal(await h.kill(), false);
  assert.equal(await sb.commands.kill(h.pid), false);
  // The server is gone: nothing answers.
  const probe = t === "tcp" ? `s = socket.socket(); print(s.connect_ex(("127.0.0.1", ${PORT})) != 0)` : `s = socket.socket(socket.AF_UNIX); print(s.connect_ex("${SOCK}") != 0)`;
  const gone = await sb.commands.run(["python3", "-c", `import socket; ${probe}`]);
  assert.equal(gone.stdout, "True\n");
}

function suite(b: HeavyBackend, t: Transport, full: boolean): void {
  describe(`background commands on ${b.name}`, { skip: b.skip }, () => {
    let sb: Sandbox;
    before(async () => {
      await b.prepare();
      sb = await Sandbox.create(b.opts);
    });
    after(() => sb?.kill());

    it("a background server: started, listed, used by a foreground command and runCode, streamed, killed, waited for", () => serverCase(sb, t));

    if (!full) return;

    it("wait() gives the exit code and output; exit 0 and commands.kill(pid) of one that ended", async () => {
      const out: string[] = [];
      const h = await sb.commands.run("echo a; sleep 0.5; echo b >&2; echo c; exit 3", { background: true, onStdout: (c) => out.push(c) });
      const r = await h.wait();
      assert.equal(r.exitCode, 3);
      assert.equal(r.stdout, "a\nc\n");
      assert.equal(r.stderr, "b\n");
      assert.equal(out.join(""), "a\nc\n");
      assert.equal(h.exitCode, 3);
      assert.equal(h.stdout, "a\nc\n");
      assert.equal(await sb.commands.kill(h.pid), false);
    });

    it("no time limit unless asked: outlives limits.timeoutMs; a given timeoutMs kills it (limitHit)", async () => {
      const s = await Sandbox.create({ ...b.opts, limits: { ...b.opts.limits, timeoutMs: 1000 } });
      try {
        const long = await s.commands.run("sleep 2.5; echo done", { background: true });
        const capped = await s.commands.run("echo before; sleep 30", { background: true, timeoutMs: 800 });
        const c = await capped.wait();
        assert.equal(c.limitHit, "timeoutMs");
        assert.equal(c.stdout, "before\n");
        const l = await long.wait();
        assert.equal(l.exitCode, 0);
        assert.equal(l.stdout, "done\n");
      } finally {
        await s.kill();
      }
    });

    it("output past limits.outputBytes kills it: limitHit outputBytes, the output up to the cap; the sandbox lives on", async () => {
      const s = await Sandbox.create({ ...b.opts, limits: { ...b.opts.limits, outputBytes: 10_000 } });
      try {
        const h = await s.commands.run("yes flood", { background: true });
        const r = await h.wait();
        assert.equal(r.limitHit, "outputBytes");
        assert.equal(r.exitCode, 137);
        assert.equal(r.stdout.length, 10_000);
        assert.equal((await s.commands.run("echo ok")).stdout, "ok\n");
      } finally {
        await s.kill();
      }
    });

    it("kill(TERM) sends SIGTERM; several run at once and list() shows each until it ends", async () => {
      const a = await sb.commands.run(["sleep", "100"], { background: true });
      const c = await sb.commands.run("trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 0.1; done", { background: true });
      assert.deepEqual(sb.commands.list().map((x) => x.pid).sort(), [a.pid, c.pid].sort());
      assert.deepEqual(sb.commands.list().find((x) => x.pid === a.pid)?.argv, ["sleep", "100"]);
      assert.ok(await waitFor(() => c.stdout === "ready\n"));
      assert.equal(await c.kill("TERM"), true);
      const r = await c.wait();
      assert.equal(r.exitCode, 7);
      assert.match(r.stdout, /got TERM/);
      assert.deepEqual(sb.commands.list().map((x) => x.pid), [a.pid]);
      assert.equal(await sb.commands.kill(a.pid), true);
      assert.equal((await a.wait()).signal, "SIGKILL");
      assert.deepEqual(sb.commands.list(), []);
    });

    it("a program that cannot start rejects with InvalidOptionsError naming why", async () => {
      await assert.rejects(sb.commands.run(["/no/such/binary"], { background: true }), (e: unknown) => e instanceof InvalidOptionsError && e.issues[0]?.path === "cmd" && /ENOENT/.test(e.message));
      await assert.rejects(sb.commands.run("true", { background: true, cwd: "/nope" }), (e: unknown) => e instanceof InvalidOptionsError && e.issues[0]?.path === "cwd");
      assert.deepEqual(sb.commands.list(), []);
    });

    it("snapshot() is refused while one runs, and works once it has ended", async () => {
      const h = await sb.commands.run("sleep 100", { background: true });
      await assert.rejects(sb.snapshot(), (e: unknown) => e instanceof InvalidOptionsError && e.message.includes(`pid ${h.pid}`));
      await h.kill();
      const snap = await sb.snapshot();
      await snap.remove();
      assert.equal((await sb.commands.run("echo alive")).stdout, "alive\n");
    });

    it("killing the sandbox ends its background commands: wait() rejects, list() is empty", async () => {
      const s = await Sandbox.create(b.opts);
      const h = await s.commands.run("echo up; sleep 1000", { background: true });
      assert.ok(await waitFor(() => h.stdout === "up\n"));
      const unwaited = await s.commands.run("sleep 1000", { background: true }); // never waited for: no unhandled rejection
      await s.kill();
      await assert.rejects(h.wait(), (e: unknown) => e instanceof AgentboxError && /closed|killed/.test(e.message));
      assert.equal(h.running, false);
      assert.equal(unwaited.running, false);
      assert.deepEqual(s.commands.list(), []);
      assert.equal(await s.commands.kill(h.pid), false);
    });
  });
}

suite(gvisor, "tcp", true);
suite(microvm, "unix", false);

describe("background commands on the nano tier", () => {
  it("are refused with TierUnavailableError, as foreground ones", async () => {
    await using nano = await Sandbox.create({ pool: false });
    await assert.rejects(nano.commands.run("sleep 1", { background: true }), (e: unknown) => e instanceof TierUnavailableError && /tier: "heavy"/.test(e.message));
    assert.deepEqual(nano.commands.list(), []);
  });
});
