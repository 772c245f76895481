// Heavy tier (gVisor) security corpus: what the guest must not see or reach, exhaustion it must
// not turn into host trouble, a hostile agent channel, and a host killed mid-command.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { before, after, describe, it } from "node:test";
import { MemoryLimitError, OutputLimitError, ProtocolError, Sandbox, SandboxClosedError, WorkerCrashedError } from "../../src/index.js";
import { GvisorBox, sweepStale } from "../../src/engines/heavy-gvisor/box.js";
import { boxSpec, type GvisorEngine } from "../../src/engines/heavy-gvisor/engine.js";
import { limitsSchema } from "../../src/policy/options.js";
import "../helpers.js";
import { ensureImage, leftovers, skipHeavy, waitFor } from "../heavy.js";

const engineOf = (sb: Sandbox) => (sb as unknown as { engine: GvisorEngine }).engine;
const heavy = { tier: "heavy", pool: false, limits: { memoryMb: 256, timeoutMs: 20_000 } } as const;
const clean = { processes: [], dir: false, cgroups: [] };

describe("heavy tier security (gVisor)", { skip: skipHeavy }, () => {
  let sb: Sandbox;
  before(async () => {
    await ensureImage();
    sb = await Sandbox.create(heavy);
  });
  after(async () => {
    await sb?.kill();
  });

  it("host files are invisible", async () => {
    const marker = path.join(os.tmpdir(), `agentbox-host-secret-${process.pid}`);
    fs.writeFileSync(marker, "secret");
    try {
      const r = await sb.commands.run(`cat ${marker}; ls /root; cat /etc/hostname; ls ${JSON.stringify(process.cwd())}; ps -e | wc -l`);
      assert.doesNotMatch(r.stdout, /secret/);
      assert.match(r.stdout, /sandbox/);
      assert.ok(Number(r.stdout.trim().split("\n").pop()) < 10, "the guest sees only its own processes");
      assert.match(r.stderr, /No such file or directory/);
      await assert.rejects(sb.files.read(marker));
    } finally {
      fs.rmSync(marker, { force: true });
    }
  });

  it("the network is refused: outside addresses and the host's own ports", async () => {
    const server = net.createServer((s) => s.end("hello from the host\n"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const code = `import socket
def attempt(host, port):
    try:
        s = socket.create_connection((host, port), timeout=2)
        return "connected " + s.recv(100).decode()
    except OSError as e:
        return type(e).__name__
[attempt("127.0.0.1", ${port}), attempt("1.1.1.1", 80), attempt("10.0.0.1", 80)]`;
      const r = await sb.runCode(code, { timeoutMs: 15_000 });
      assert.equal(r.error, undefined);
      assert.doesNotMatch(r.value!, /connected/);
      const ifaces = await sb.commands.run("cat /proc/net/dev | tail -n +3 | cut -d: -f1");
      assert.deepEqual(ifaces.stdout.split("\n").map((s) => s.trim()).filter(Boolean), ["lo"]);
    } finally {
      server.close();
    }
  });

  it("writes to the root file system are refused", async () => {
    const r = await sb.commands.run("for p in /usr/bin/python3 /etc/passwd /opt/agentbox/agent.py /newfile; do echo x > $p 2>/dev/null && echo WROTE $p; done; touch /usr/x 2>&1; echo ok");
    assert.doesNotMatch(r.stdout, /WROTE/);
    assert.match(r.stdout, /Read-only file system|Permission denied|ok/);
    const py = await sb.runCode("import os\ntry:\n    open('/usr/lib/evil', 'w')\nexcept OSError as e:\n    r = e.errno\nr");
    assert.ok(["30", "13"].includes(py.value ?? ""), `errno ${py.value}`); // EROFS or EACCES
  });

  it("a fork bomb is contained by RLIMIT_NPROC; the host and the sandbox live on", async () => {
    const r = await sb.commands.run("bomb() { bomb | bomb & }; bomb; sleep 2; echo survived", { timeoutMs: 15_000 }).catch((e: unknown) => e);
    // Either the command finished or its timeout killed it; the sandbox still answers.
    assert.ok(!(r instanceof SandboxClosedError), String(r));
    assert.equal((await sb.commands.run("echo alive", { timeoutMs: 10_000 })).stdout, "alive\n");
  });

  it("disk fill: the guest gets ENOSPC at limits.diskMb", async () => {
    await using s = await Sandbox.create({ ...heavy, limits: { ...heavy.limits, diskMb: 8 } });
    const r = await s.commands.run("dd if=/dev/zero of=/home/user/big bs=1M count=64 2>&1; ls -l /home/user/big");
    assert.match(r.stdout, /No space left on device/);
    const py = await s.runCode("import errno\ntry:\n    open('/tmp/x','wb').write(b'x' * (32 << 20))\nexcept OSError as e:\n    r = errno.errorcode[e.errno]\nr");
    assert.equal(py.value, "'ENOSPC'");
  });

  it("output flood: OutputLimitError, the command killed, the sandbox lives on", async () => {
    await using s = await Sandbox.create({ ...heavy, limits: { ...heavy.limits, outputBytes: 100_000 } });
    await assert.rejects(s.commands.run("yes flood"), (e: unknown) => e instanceof OutputLimitError && e.value === 100_000);
    const r = await s.runCode("print('x' * 1_000_000)");
    assert.equal(r.limitHit, "outputBytes");
    assert.ok(Buffer.byteLength(r.stdout) <= 100_000);
    assert.equal((await s.commands.run("echo ok")).stdout, "ok\n");
  });

  it("memory bomb: the cgroup OOM-kills the sandbox, MemoryLimitError, nothing left", async () => {
    const s = await Sandbox.create({ ...heavy, limits: { ...heavy.limits, memoryMb: 128 } });
    const res = engineOf(s).resources;
    await assert.rejects(s.runCode("x = []\nwhile True: x.append(bytearray(8 << 20))"), (e: unknown) => e instanceof MemoryLimitError && e.value === 128);
    assert.equal(s.closed, true);
    await assert.rejects(s.commands.run("true"), SandboxClosedError);
    await s.kill();
    assert.deepEqual(leftovers(res), clean);
  });

  it("a guest that floods the agent channel with garbage: ProtocolError, host fine, nothing left", async () => {
    const spec = { ...boxSpec({ limits: limitsSchema.parse({}), env: {}, seed: null, packages: [] }), agentArgv: ["/bin/sh", "-c", "head -c 3000000 /dev/urandom; sleep 100"] };
    const err = await GvisorBox.start(spec).then(
      async (b) => {
        await b.dispose(new Error("unexpected"));
        return undefined;
      },
      (e: unknown) => e,
    );
    assert.ok(err instanceof ProtocolError || err instanceof WorkerCrashedError, String(err));
    // A garbage frame that parses as JSON but breaks the schema.
    const frame = Buffer.from(JSON.stringify({ type: "ready", v: 1, agent: "x", python: "3", extra: true }));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(frame.length);
    const printf = [...head, ...frame].map((b) => `\\${b.toString(8).padStart(3, "0")}`).join("");
    const err2 = await GvisorBox.start({ ...spec, agentArgv: ["/bin/sh", "-c", `printf '${printf}'; sleep 100`] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err2 instanceof ProtocolError, String(err2));
    const shared = path.basename(engineOf(sb).resources.dir);
    const mine = fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith("agentbox-gvisor-") && d !== shared && fs.readFileSync(path.join(os.tmpdir(), d, "owner.pid"), "utf8") === String(process.pid));
    assert.deepEqual(mine, [], "the hostile boxes left their directories");
  });

  it("killing the host mid-command leaves nothing behind", async () => {
    const script = `
      import { Sandbox } from ${JSON.stringify(path.resolve("src/index.ts"))};
      const sb = await Sandbox.create({ tier: "heavy", pool: false });
      const e = sb.engine.resources;
      console.log(JSON.stringify(e));
      await sb.commands.run("sleep 300");`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    assert.ok(await waitFor(() => out.includes("\n"), 30_000), "child did not start a sandbox");
    const res = JSON.parse(out.trim()) as { containerId: string; dir: string; cgroupDirs: string[] };
    await new Promise((r) => setTimeout(r, 500)); // the command is running
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    // The guest ends with its channel; the next agentbox process sweeps what the dead one left.
    assert.ok(await waitFor(() => leftovers(res).processes.length === 0, 15_000), "runsc processes outlived the host");
    sweepStale();
    assert.deepEqual(leftovers(res), clean);
  });
});
