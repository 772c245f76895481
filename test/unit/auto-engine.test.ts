// Tier "auto"'s engine with fake sides (no worker, no gVisor): the host follows the guest's answer
// and never looks at the code itself; a move copies files, replays the cells that ran without
// error (output discarded), copies again, and disposes of the nano side; a failed move leaves
// the sandbox on the nano tier as it was. The real thing: test/integration/auto.test.ts.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FileSystemError, ReplayError, SandboxClosedError, TierUnavailableError } from "../../src/errors.js";
import { AutoEngine } from "../../src/engines/auto/engine.js";
import type { Engine, EngineRunOptions, EngineRunResult, NeedsHeavy } from "../../src/engines/engine.js";
import type { DirEntry } from "../../src/protocol/messages.js";

const ok = (over: Partial<EngineRunResult> = {}): EngineRunResult => ({ stdout: "", stderr: "", value: null, error: null, limitHit: null, durationMs: 1, vfsDigest: "0".repeat(64), ...over });

/** An engine over an in-memory tree; `answer` decides each run. */
class FakeEngine implements Engine {
  readonly files = new Map<string, Uint8Array>();
  readonly dirs = new Set<string>(["/", "/home", "/home/user", "/tmp"]);
  readonly ran: { code: string; opts: EngineRunOptions }[] = [];
  closedReason: string | undefined;
  pid = 1;
  /** Extra raw entries a hostile worker adds to a listing. */
  extraEntries: DirEntry[] = [];
  constructor(private readonly answer: (code: string) => EngineRunResult | NeedsHeavy = () => ok()) {}

  async run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    this.ran.push({ code, opts });
    return this.answer(code) as EngineRunResult;
  }
  async runUnlessHeavy(code: string, opts: EngineRunOptions): Promise<EngineRunResult | NeedsHeavy> {
    const r = this.answer(code);
    if (!("needsHeavy" in r)) this.ran.push({ code, opts });
    return r;
  }
  async exec() {
    return { exitCode: 0, stdout: "ran", stderr: "", signal: null, durationMs: 1 };
  }
  async writeFile(p: string, data: Uint8Array) {
    this.files.set(p, data);
  }
  async readFile(p: string) {
    const f = this.files.get(p);
    if (!f) throw new FileSystemError(p, "ENOENT", "no such file");
    return f;
  }
  async list(p: string): Promise<DirEntry[]> {
    const kids = (m: Iterable<string>) => [...m].filter((x) => x !== p && x.startsWith(p === "/" ? "/" : `${p}/`) && !x.slice(p.length + 1).includes("/"));
    return [
      ...kids(this.dirs).map((x) => ({ name: x.split("/").at(-1)!, path: x, type: "dir" as const, size: 0 })),
      ...kids(this.files.keys()).map((x) => ({ name: x.split("/").at(-1)!, path: x, type: "file" as const, size: this.files.get(x)!.length })),
      ...(p === "/home/user" ? this.extraEntries : []),
    ].sort((a, b) => (a.name < b.name ? -1 : 1));
  }
  async remove(p: string) {
    this.files.delete(p);
  }
  async exists(p: string) {
    return this.dirs.has(p) || this.files.has(p);
  }
  async makeDir(p: string) {
    this.dirs.add(p);
  }
  async dispose(reason = "killed") {
    this.closedReason ??= reason;
  }
}

const text = (s: string) => new TextEncoder().encode(s);
const config = (heavy: () => Promise<Engine>) => ({ startHeavy: heavy, mountPaths: [], maxCopyEntries: 100 });
const run = (e: AutoEngine, code: string) => e.run(code, { timeoutMs: 1000 });

describe('tier "auto" engine', () => {
  it("follows the guest's answer: the host passes the code through unread and moves only when told", async () => {
    // The fake guest says "needs heavy" for harmless code and runs `import subprocess` on nano:
    // the engine does what the guest said, so the decision cannot be the host's.
    const nano = new FakeEngine((code) => (code === "x = 1" ? { needsHeavy: "the guest said so" } : ok({ value: "'nano'" })));
    const heavy = new FakeEngine(() => ok({ value: "'heavy'" }));
    const e = AutoEngine.onNano(nano, config(async () => heavy));
    const a = await run(e, "import subprocess");
    assert.deepEqual([a.tier, a.value, e.tier], ["nano", "'nano'", "nano"]);
    const b = await run(e, "x = 1");
    assert.deepEqual([b.tier, b.value, e.tier], ["heavy", "'heavy'", "heavy"]);
    assert.deepEqual(heavy.ran.map((r) => r.code), ["import subprocess", "x = 1"], "the earlier cell was replayed, then the cell ran");
    assert.equal(nano.closedReason, "moved to the heavy tier");
    assert.equal((await run(e, "y")).tier, "heavy");
  });

  it("replays only the cells that ran without error, with their own time limit and no output callbacks; files end as on nano", async () => {
    const nano = new FakeEngine((code) => (code.startsWith("heavy") ? { needsHeavy: "import of pandas" } : code === "bad" ? ok({ error: { name: "ValueError", message: "x", traceback: "" } }) : ok()));
    const heavy = new FakeEngine((code) => {
      if (code === "append") heavy.files.set("/home/user/log.txt", text("replayed twice"));
      return ok();
    });
    const e = AutoEngine.onNano(nano, config(async () => heavy));
    await e.run("a = 1", { timeoutMs: 111 });
    await run(e, "bad");
    await e.run("append", { timeoutMs: 222 });
    await nano.writeFile("/home/user/log.txt", text("once"));
    await nano.makeDir("/home/user/sub");
    await nano.writeFile("/home/user/sub/d.csv", text("a,b"));
    await nano.writeFile("/tmp/t", text("t"));
    nano.dirs.add("/etc");
    await nano.writeFile("/etc/elsewhere", text("not copied"));
    let seen = "";
    const r = await e.run("heavy cell", { timeoutMs: 333, onStdout: (s) => (seen += s) });
    assert.equal(r.tier, "heavy");
    assert.deepEqual(heavy.ran.map((x) => [x.code, x.opts.timeoutMs, x.opts.onStdout === undefined]), [
      ["a = 1", 111, true],
      ["append", 222, true],
      ["heavy cell", 333, false],
    ]);
    assert.equal(new TextDecoder().decode(heavy.files.get("/home/user/log.txt")), "once", "copied again after the replay");
    assert.equal(new TextDecoder().decode(heavy.files.get("/home/user/sub/d.csv")), "a,b");
    assert.ok(heavy.files.has("/tmp/t") && !heavy.files.has("/etc/elsewhere"));
  });

  it("a replayed cell that raises is a ReplayError naming it; the sandbox stays on nano as it was", async () => {
    const nano = new FakeEngine((code) => (code === "import subprocess" ? { needsHeavy: "import of subprocess" } : ok()));
    const heavy = new FakeEngine((code) => (code === "check()" ? ok({ error: { name: "AssertionError", message: "linux", traceback: "Traceback" } }) : ok()));
    const e = AutoEngine.onNano(nano, config(async () => heavy));
    await run(e, "x = 1");
    await run(e, "check()");
    await assert.rejects(run(e, "import subprocess"), (err: unknown) => {
      assert.ok(err instanceof ReplayError, String(err));
      assert.equal(err.code, "REPLAY_FAILED");
      assert.equal(err.cell, 2);
      assert.equal(err.guestError?.name, "AssertionError");
      assert.match(err.message, /cell 2 .*raised AssertionError: linux.*stays on the nano tier/);
      return true;
    });
    assert.equal(e.tier, "nano");
    assert.equal(heavy.closedReason, "moving to the heavy tier failed");
    assert.equal(nano.closedReason, undefined);
    assert.equal((await run(e, "x")).tier, "nano");
  });

  it("a heavy tier that cannot start is a TierUnavailableError saying why; nano lives on", async () => {
    const nano = new FakeEngine((code) => (code === "import pandas" ? { needsHeavy: "import of pandas (not in the nano tier's Python)" } : ok()));
    const e = AutoEngine.onNano(nano, config(async () => Promise.reject(new TierUnavailableError("runsc (gVisor) is not installed; install it with `sudo apt-get install runsc`"))));
    await assert.rejects(run(e, "import pandas"), (err: unknown) => err instanceof TierUnavailableError && /import of pandas.*cannot start: runsc .*apt-get install runsc.*stays on the nano tier/.test(err.message));
    await assert.rejects(e.exec(["true"], { timeoutMs: 1000 }), (err: unknown) => err instanceof TierUnavailableError && /commands\.run/.test(err.message));
    assert.equal(e.tier, "nano");
    assert.equal((await run(e, "1")).tier, "nano");
  });

  it("commands move it; host writes on nano go only where the heavy tier keeps files", async () => {
    const nano = new FakeEngine();
    const heavy = new FakeEngine();
    const e = AutoEngine.onNano(nano, config(async () => heavy));
    await assert.rejects(e.writeFile("/data/x.csv", text("x")), (err: unknown) => err instanceof FileSystemError && err.errno === "EROFS" && /\/home\/user and \/tmp/.test(err.message));
    await assert.rejects(e.makeDir("/opt/d"), (err: unknown) => err instanceof FileSystemError && err.errno === "EROFS");
    await e.writeFile("/home/user/in.txt", text("in"));
    assert.equal((await e.exec(["cat", "in.txt"], { timeoutMs: 1000 })).stdout, "ran");
    assert.equal(e.tier, "heavy");
    assert.equal(new TextDecoder().decode(heavy.files.get("/home/user/in.txt")), "in");
  });

  it("a hostile listing from the nano worker cannot steer the copy outside the directory it lists", async () => {
    const nano = new FakeEngine((code) => (code === "go" ? { needsHeavy: "x" } : ok()));
    nano.extraEntries = [
      { name: "../../etc/passwd", path: "/etc/passwd", type: "file", size: 1 },
      { name: "..", path: "/", type: "dir", size: 0 },
      { name: "ok.txt", path: "/etc/shadow", type: "file", size: 1 },
    ];
    await nano.writeFile("/home/user/ok.txt", text("fine"));
    const heavy = new FakeEngine();
    const e = AutoEngine.onNano(nano, config(async () => heavy));
    await run(e, "go");
    assert.deepEqual([...heavy.files.keys()].sort(), ["/home/user/ok.txt"]);
  });

  it("kill() during a move ends the heavy side too, and the move fails as closed", async () => {
    const nano = new FakeEngine((code) => (code === "go" ? { needsHeavy: "x" } : ok()));
    const heavy = new FakeEngine();
    let started!: () => void;
    const gate = new Promise<void>((r) => (started = r));
    const e = AutoEngine.onNano(
      nano,
      config(async () => {
        await gate;
        return heavy;
      }),
    );
    const moving = run(e, "go");
    await e.dispose("killed by the caller");
    started();
    await assert.rejects(moving, SandboxClosedError);
    assert.ok(heavy.closedReason !== undefined, "the heavy side started late is ended");
    assert.equal(e.closedReason, "killed by the caller");
  });
});
