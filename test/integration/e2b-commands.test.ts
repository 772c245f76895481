// E2B's `e2b` SDK, unchanged, running commands in an agentbox sandbox through envd's process
// service (Connect JSON): run with stdout/stderr/exit code, CommandExitError, streamed callbacks,
// envs and cwd, background handles (list, wait, kill, connect by pid), a command the native API
// started, the timeout, stdin (sendStdin, closeStdin), the wire format itself, users, and the
// nano tier's clear refusal.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { CommandExitError, InvalidArgumentError, Sandbox, SandboxError, TimeoutError } from "e2b";
import "../helpers.js";
import { startE2bServer, type E2bServer } from "../e2b-helpers.js";
import { ensureImage, skipHeavy } from "../heavy.js";

describe("E2B SDK: commands (process.Process) on the heavy tier (gVisor)", { skip: skipHeavy }, () => {
  let srv: E2bServer;
  let sbx: Sandbox;

  before(async () => {
    await ensureImage();
    srv = await startE2bServer();
    sbx = await Sandbox.create("base", { timeoutMs: 120_000 });
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await srv?.close();
  });

  it("run: stdout, stderr and exit code 0 (bash -l -c)", async () => {
    const r = await sbx.commands.run("echo hi && echo err >&2");
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "hi\n");
    assert.equal(r.stderr, "err\n");
    assert.equal(r.error, undefined);
  });

  it("a failing command throws CommandExitError with its exit code, output and Go's status text", async () => {
    await assert.rejects(
      () => sbx.commands.run("echo partial; echo bad >&2; exit 3"),
      (e: unknown) => {
        assert.ok(e instanceof CommandExitError, String(e));
        assert.equal(e.exitCode, 3);
        assert.equal(e.stdout, "partial\n");
        assert.equal(e.stderr, "bad\n");
        assert.equal(e.error, "exit status 3");
        return true;
      },
    );
  });

  it("onStdout/onStderr get the output as it comes, in order", async () => {
    const seen: string[] = [];
    const t0 = Date.now();
    let firstAt = 0;
    const r = await sbx.commands.run("echo one; sleep 1; echo two >&2; sleep 0.2; echo three", {
      onStdout: (d) => {
        firstAt ||= Date.now() - t0;
        seen.push(`out:${d}`);
      },
      onStderr: (d) => void seen.push(`err:${d}`),
    });
    assert.deepEqual(seen, ["out:one\n", "err:two\n", "out:three\n"]);
    assert.equal(r.stdout, "one\nthree\n");
    const total = Date.now() - t0;
    assert.ok(total - firstAt > 900, `the first line came ${firstAt} ms in, the command took ${total} ms: it was not streamed`);
  });

  it("envs and cwd", async () => {
    const r = await sbx.commands.run('echo "$GREETING/$(pwd)"', { envs: { GREETING: "hello world" }, cwd: "/tmp" });
    assert.equal(r.stdout, "hello world//tmp\n");
    const home = await sbx.commands.run("pwd; id -un");
    assert.equal(home.stdout, "/home/user\nuser\n");
  });

  it("background: a handle with the pid, listed, connect(pid) streams on, wait, kill", async () => {
    const h = await sbx.commands.run("echo started; while true; do sleep 0.2; echo tick; done", { background: true, timeoutMs: 0 });
    assert.ok(Number.isInteger(h.pid) && h.pid > 0);
    const listed = await sbx.commands.list();
    const row = listed.find((p) => p.pid === h.pid);
    assert.ok(row, JSON.stringify(listed));
    assert.equal(row.cmd, "/bin/bash");
    assert.deepEqual(row.args, ["-l", "-c", "echo started; while true; do sleep 0.2; echo tick; done"]);

    // The first handle lets go; the process runs on and a new connection streams further output.
    await h.disconnect();
    const ticks: string[] = [];
    const again = await sbx.commands.connect(h.pid, { onStdout: (d) => void ticks.push(d), timeoutMs: 0 });
    assert.equal(again.pid, h.pid);
    const deadline = Date.now() + 10_000;
    while (ticks.join("").split("tick").length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.ok(ticks.join("").includes("tick"), `connect streamed ${JSON.stringify(ticks)}`);

    assert.equal(await again.kill(), true);
    await assert.rejects(
      () => again.wait(),
      (e: unknown) => {
        assert.ok(e instanceof CommandExitError, String(e));
        assert.equal(e.exitCode, -1);
        assert.equal(e.error, "signal: killed");
        return true;
      },
    );
    assert.ok(!(await sbx.commands.list()).some((p) => p.pid === h.pid));
    assert.equal(await sbx.commands.kill(h.pid), false, "killing a pid that has ended says false (not_found)");
  });

  it("background: wait() gives the result of a command that ends by itself; tags and commands.kill by pid", async () => {
    const h = await sbx.commands.run("sleep 0.5; echo done", { background: true });
    const r = await h.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "done\n");

    const other = await sbx.commands.run("sleep 30", { background: true, timeoutMs: 0 });
    assert.equal(await sbx.commands.kill(other.pid), true);
    await assert.rejects(() => other.wait(), CommandExitError);
  });

  it("a background command started by agentbox's native API is listed, connected to and killed through the SDK", async () => {
    const res = await fetch(`${srv.server.url}/sandboxes/${sbx.sandboxId}/commands`, {
      method: "POST",
      headers: { authorization: `Bearer ${srv.env.E2B_API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ cmd: "sleep 0.5; echo native; sleep 30", background: true }),
    });
    assert.equal(res.status, 202, await res.clone().text());
    const { pid } = (await res.json()) as { pid: number };
    const row = (await sbx.commands.list()).find((p) => p.pid === pid);
    assert.deepEqual(row && { cmd: row.cmd, args: row.args }, { cmd: "/bin/bash", args: ["-c", "sleep 0.5; echo native; sleep 30"] });
    let out = "";
    const h = await sbx.commands.connect(pid, { onStdout: (d) => void (out += d) });
    const deadline = Date.now() + 10_000;
    while (!out.includes("native") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(out, "native\n");
    assert.equal(await sbx.commands.kill(pid), true);
    await assert.rejects(() => h.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === -1);
  });

  it("timeoutMs ends the command (TimeoutError) and it is killed in the sandbox", async () => {
    const t0 = Date.now();
    await assert.rejects(
      () => sbx.commands.run("echo $$ > /tmp/slow.pid; sleep 20", { timeoutMs: 1500 }),
      (e: unknown) => {
        assert.ok(e instanceof TimeoutError, String(e));
        return true;
      },
    );
    const took = Date.now() - t0;
    assert.ok(took < 10_000, `took ${took} ms`);
    // The server killed it at its deadline: it is no longer running.
    const check = await sbx.commands.run("sleep 0.3; kill -0 $(cat /tmp/slow.pid) 2>/dev/null && echo alive || echo gone");
    assert.equal(check.stdout, "gone\n");
    assert.equal((await sbx.commands.list()).length, 0);
  });

  it("stdin: true keeps stdin open: sendStdin is read as it comes, closeStdin is EOF; a command without it refuses", async () => {
    let out = "";
    const h = await sbx.commands.run("while read -r line; do echo \"got:$line\"; done; echo eof", { background: true, stdin: true, onStdout: (d) => void (out += d) });
    await h.sendStdin("one\n");
    const deadline = Date.now() + 10_000;
    while (!out.includes("got:one") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(out, "got:one\n", "the first line was echoed before stdin closed");
    await sbx.commands.sendStdin(h.pid, new TextEncoder().encode("two\nthree\n"));
    await h.closeStdin();
    const r = await h.wait();
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "got:one\ngot:two\ngot:three\neof\n");

    // Without stdin: true the command's stdin is /dev/null and writing to it is refused.
    const plain = await sbx.commands.run("cat; sleep 10", { background: true, timeoutMs: 0 });
    await assert.rejects(
      () => plain.sendStdin("x"),
      (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.match((e as Error).message, /not started with its stdin open/);
        return true;
      },
    );
    await plain.kill();
  });

  it("the wire: enveloped JSON events (start, base64 data, keepalive, end) and an end-of-stream envelope; hostile requests get Connect errors", async () => {
    const token = (sbx as unknown as { envdAccessToken: string }).envdAccessToken;
    const headers = { "e2b-sandbox-id": sbx.sandboxId, "e2b-sandbox-port": "49983", "x-access-token": token };
    const stream = async (body: Uint8Array, extra: Record<string, string> = {}) => {
      const res = await fetch(`${srv.env.E2B_SANDBOX_URL}/process.Process/Start`, { method: "POST", headers: { ...headers, "content-type": "application/connect+json", ...extra }, body });
      const bytes = Buffer.from(await res.arrayBuffer());
      const frames: { flags: number; msg: Record<string, unknown> }[] = [];
      for (let i = 0; i < bytes.length; ) {
        const n = bytes.readUInt32BE(i + 1);
        frames.push({ flags: bytes[i]!, msg: JSON.parse(bytes.subarray(i + 5, i + 5 + n).toString("utf8")) as Record<string, unknown> });
        i += 5 + n;
      }
      return { status: res.status, frames };
    };
    const env = (m: unknown) => {
      const j = Buffer.from(JSON.stringify(m));
      const b = Buffer.alloc(5 + j.length);
      b.writeUInt32BE(j.length, 1);
      j.copy(b, 5);
      return b;
    };
    const ok = await stream(env({ process: { cmd: "/bin/bash", args: ["-c", "printf 'a\\n'; sleep 1.5; exit 2"] } }), { "keepalive-ping-interval": "1" });
    assert.equal(ok.status, 200);
    const events = ok.frames.map((f) => f.msg);
    assert.ok(typeof (events[0] as { event: { start: { pid: number } } }).event.start.pid === "number", JSON.stringify(events));
    assert.deepEqual(events[1], { event: { data: { stdout: Buffer.from("a\n").toString("base64") } } });
    assert.ok(events.some((e) => JSON.stringify(e) === '{"event":{"keepalive":{}}}'), JSON.stringify(events));
    assert.deepEqual(events.at(-2), { event: { end: { exitCode: 2, exited: true, status: "exit status 2", error: "exit status 2" } } });
    assert.deepEqual(ok.frames.at(-1), { flags: 2, msg: {} });
    assert.ok(ok.frames.slice(0, -1).every((f) => f.flags === 0));

    const bad = await stream(env({ process: { cmd: 5, args: "x" } }));
    assert.equal(bad.status, 200);
    assert.equal(bad.frames.length, 1);
    assert.equal(bad.frames[0]!.flags, 2);
    assert.equal((bad.frames[0]!.msg.error as { code: string }).code, "invalid_argument");
    const truncated = await fetch(`${srv.env.E2B_SANDBOX_URL}/process.Process/Start`, { method: "POST", headers: { ...headers, "content-type": "application/connect+json" }, body: Buffer.from([0, 0, 0, 9, 9, 123]) });
    assert.equal(truncated.status, 400);
    assert.equal(((await truncated.json()) as { code: string }).code, "invalid_argument");
    const signal = await fetch(`${srv.env.E2B_SANDBOX_URL}/process.Process/SendSignal`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify({ process: { pid: 1 }, signal: "SIGNAL_SIGSTOP" }) });
    assert.equal(signal.status, 400);
    assert.match(((await signal.json()) as { message: string }).message, /SIGNAL_SIGKILL/);
    const missing = await fetch(`${srv.env.E2B_SANDBOX_URL}/process.Process/SendSignal`, { method: "POST", headers: { ...headers, "content-type": "application/json" }, body: JSON.stringify({ process: { pid: "424242" }, signal: "SIGNAL_SIGTERM" }) });
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { code: string }).code, "not_found");
  });

  it("a user other than user/root is refused; root runs as user", async () => {
    const r = await sbx.commands.run("id -u", { user: "root" });
    assert.equal(r.stdout, "1000\n");
    await assert.rejects(() => sbx.commands.run("true", { user: "nobody-here" as "user" }), /does not exist/);
  });
});

describe("E2B SDK: commands on the nano tier", () => {
  let srv: E2bServer;
  let sbx: Sandbox;

  before(async () => {
    srv = await startE2bServer();
    sbx = await Sandbox.create("agentbox-python");
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await srv?.close();
  });

  it("commands.run and list answer a clear error naming the heavy tier", async () => {
    await assert.rejects(
      () => sbx.commands.run("echo hi"),
      (e: unknown) => {
        assert.ok(e instanceof SandboxError, String(e));
        assert.match((e as Error).message, /\[unimplemented\] commands need agentbox's heavy tier.*template "base"/);
        return true;
      },
    );
    await assert.rejects(() => sbx.commands.list(), /heavy tier/);
  });
});
