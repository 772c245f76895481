// Snapshots and forks on the nano tier (deterministic replay, engines/replay), for Python and
// JavaScript: what a restored copy holds (globals, imports, functions, classes, files by code and
// by the host), the seeded stream continuing exactly, independent restores, forks with and without
// seeds, the history cap, removed snapshots, mounts; sb.id; and the heavy tier's fork on gVisor.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { FileSystemError, InvalidOptionsError, ReplayError, Sandbox, SnapshotRemovedError, TimeoutError } from "../../src/index.js";
import { MAX_HISTORY_BYTES, MAX_HISTORY_STEPS } from "../../src/engines/replay/engine.js";
import { ensureImage, skipHeavy } from "../heavy.js";

after(() => Sandbox.shutdownPool());

/** The same checks in each language: cells that build state, and one that reads it back. */
interface Lang {
  language: "python" | "javascript";
  /** Defines a variable, an import, a function and a class, draws a random number. */
  build: string;
  /** Raises after defining `late`: its side effects happened, so the copy has them too. */
  raises: string;
  /** Writes /home/user/by-code.txt and /tmp/doomed.txt from the guest. */
  writeFiles: string;
  /** Uses everything `build` and `raises` defined; draws from the random stream and the entropy source. */
  readBack: string;
  /** Draws one random number. */
  draw: string;
}

const LANGS: Lang[] = [
  {
    language: "python",
    build: "import json, random\ncounter = 41\ndef twice(a):\n    return a * 2\nclass Box:\n    def __init__(self, v):\n        self.v = v\nrandom.random()",
    raises: "late = 'set before the raise'\nraise ValueError('on purpose')",
    writeFiles: "open('/home/user/by-code.txt', 'w').write('from code')\nopen('/tmp/doomed.txt', 'w').write('x')",
    readBack: "import os\n(counter + 1, twice(3), Box(7).v, json.dumps({'a': 1}), late, random.random(), os.urandom(4).hex())",
    draw: "random.random()",
  },
  {
    language: "javascript",
    build: "globalThis.counter = 41;\nglobalThis.twice = (a) => a * 2;\nglobalThis.Box = class { constructor(v) { this.v = v } };\nglobalThis.fsMod = (await import('fs')).default;\nMath.random()",
    raises: "globalThis.late = 'set before the raise';\nthrow new Error('on purpose')",
    writeFiles: "fsMod.writeFileSync('/home/user/by-code.txt', 'from code');\nfsMod.writeFileSync('/tmp/doomed.txt', 'x')",
    readBack: "JSON.stringify([counter + 1, twice(3), new Box(7).v, fsMod.existsSync('/home/user/by-code.txt'), late, Math.random(), Array.from(crypto.getRandomValues(new Uint8Array(4)))])",
    draw: "Math.random()",
  },
];

const ID = /^sb_[0-9a-f]{24}$/;

for (const l of LANGS) {
  describe(`nano snapshots: ${l.language}`, () => {
    it("a restored copy has the variables, imports, functions, classes and files, and continues the seeded stream exactly", async () => {
      await using sb = await Sandbox.create({ language: l.language, seed: 1234 });
      assert.equal((await sb.runCode(l.build)).error, undefined);
      assert.equal((await sb.runCode(l.raises)).error?.message, "on purpose");
      await sb.files.write("/home/user/by-host.txt", "from the host");
      assert.equal((await sb.runCode(l.writeFiles)).error, undefined);
      await sb.files.remove("/tmp/doomed.txt");
      await sb.files.makeDir("/home/user/empty-dir");
      const snap = await sb.snapshot();
      // C after the snapshot: the same output in the original and in the copy.
      const inOriginal = await sb.runCode(l.readBack);
      await using copy = await Sandbox.restore(snap);
      const inCopy = await copy.runCode(l.readBack);
      assert.equal(inCopy.error, undefined, inCopy.error?.traceback);
      assert.equal(inCopy.stdout, inOriginal.stdout);
      assert.equal(inCopy.value, inOriginal.value);
      assert.match(String(inCopy.value), /42/);
      assert.equal(inCopy.vfsDigest, inOriginal.vfsDigest);
      assert.equal(await copy.files.read("/home/user/by-host.txt"), "from the host");
      assert.equal(await copy.files.read("/home/user/by-code.txt"), "from code");
      assert.equal(await copy.files.exists("/tmp/doomed.txt"), false, "a removed file stays removed");
      assert.equal((await copy.files.list("/home/user/empty-dir")).length, 0);
      assert.equal(copy.seed, sb.seed);
      assert.match(copy.id, ID);
      assert.notEqual(copy.id, sb.id);
      await snap.remove();
    });

    it("restores twice into independent copies; remove() then restore rejects with SnapshotRemovedError", async () => {
      await using sb = await Sandbox.create({ language: l.language, seed: 7 });
      await sb.runCode(l.build);
      const snap = await sb.snapshot();
      await using a = await Sandbox.restore(snap);
      await using b = await Sandbox.restore(snap);
      await a.runCode(l.language === "python" ? "counter = 100" : "globalThis.counter = 100");
      await a.files.write("/home/user/only-a.txt", "a");
      assert.equal((await b.runCode("counter")).value, "41");
      assert.equal((await sb.runCode("counter")).value, "41");
      assert.equal((await a.runCode("counter")).value, "100");
      assert.equal(await b.files.exists("/home/user/only-a.txt"), false);
      // A copy of a copy: its history holds the original's cells and its own.
      const snapA = await a.snapshot();
      await using aa = await Sandbox.restore(snapA);
      assert.equal((await aa.runCode("counter")).value, "100");
      assert.equal(await aa.files.read("/home/user/only-a.txt"), "a");
      assert.equal(new Set([sb.id, a.id, b.id, aa.id]).size, 4);
      await snap.remove();
      await snap.remove(); // idempotent
      await assert.rejects(Sandbox.restore(snap), SnapshotRemovedError);
      await snapA.remove();
    });

    it("fork(3): without seeds the forks continue the parent's stream alike; with seeds each differs", async () => {
      await using sb = await Sandbox.create({ language: l.language, seed: 99 });
      await sb.runCode(l.build);
      const same = await sb.fork(3);
      const differ = await sb.fork(3, { seeds: [1, 2, 3] });
      try {
        const parent = (await sb.runCode(l.draw)).value;
        const sameDraws = await Promise.all(same.map(async (f) => (await f.runCode(l.draw)).value));
        assert.deepEqual(sameDraws, [parent, parent, parent]);
        const differDraws = await Promise.all(differ.map(async (f) => (await f.runCode(l.draw)).value));
        assert.equal(new Set(differDraws).size, 3, `forks with their own seeds drew ${differDraws.join(", ")}`);
        assert.ok(!differDraws.includes(parent));
        assert.deepEqual(differ.map((f) => f.seed), [1, 2, 3]);
        for (const f of [...same, ...differ]) assert.equal((await f.runCode("counter")).value, "41");
        assert.equal(new Set([sb.id, ...same.map((f) => f.id), ...differ.map((f) => f.id)]).size, 7);
        // A reseeded fork is itself snapshot-able: the reseed is part of its history.
        const snap = await differ[0]!.snapshot();
        const next = (await differ[0]!.runCode(l.draw)).value;
        await using again = await Sandbox.restore(snap);
        assert.equal((await again.runCode(l.draw)).value, next);
        await snap.remove();
      } finally {
        await Promise.all([...same, ...differ].map((f) => f.kill()));
      }
    });
  });
}

describe("nano snapshots: limits and refusals", () => {
  it("a history past its cap of steps is refused with a ReplayError naming the cap; the sandbox runs on", async () => {
    await using sb = await Sandbox.create({ language: "javascript", seed: 1 });
    for (let i = 0; i <= MAX_HISTORY_STEPS; i++) await sb.runCode(`globalThis.n = ${i}`);
    await assert.rejects(sb.snapshot(), (e: unknown) => e instanceof ReplayError && /MAX_HISTORY_STEPS/.test(e.message) && new RegExp(String(MAX_HISTORY_STEPS)).test(e.message));
    assert.equal((await sb.runCode("n")).value, String(MAX_HISTORY_STEPS));
    await assert.rejects(sb.fork(2), ReplayError);
  });

  it("a history past its cap of bytes (code and host-written data) is refused the same way", async () => {
    await using sb = await Sandbox.create({ language: "javascript", seed: 1 });
    const MiB = 1024 * 1024;
    await sb.files.write("/tmp/big.bin", new Uint8Array(MAX_HISTORY_BYTES / 2));
    for (let i = 0; i * MiB <= MAX_HISTORY_BYTES / 2; i++) await sb.runCode(`// ${"a".repeat(MiB)}\n${i}`);
    await assert.rejects(sb.snapshot(), (e: unknown) => e instanceof ReplayError && /MAX_HISTORY_BYTES/.test(e.message));
  });

  it("a cell stopped by its time limit makes the history unreplayable: snapshot() says why", async () => {
    await using sb = await Sandbox.create({ limits: { timeoutMs: 300 } });
    const r = await sb.runCode("while True:\n    pass");
    assert.equal(r.limitHit, "timeoutMs");
    await assert.rejects(sb.snapshot(), (e: unknown) => e instanceof ReplayError && /time limit/.test(e.message));
  });

  it("a guest that replaced what a reseed calls cannot hold a fork: the copy's worker is killed at the time limit", async () => {
    await using sb = await Sandbox.create({ seed: 8, limits: { timeoutMs: 400, graceMs: 100 } });
    await sb.runCode("import random\ndef stuck(*a):\n    while True:\n        pass\nrandom.seed = stuck");
    await assert.rejects(sb.fork(1, { seeds: [1] }), TimeoutError);
    assert.equal((await sb.runCode("1 + 1")).value, "2", "the parent is not affected");
  });

  it("fork(n) checks n and seeds", async () => {
    await using sb = await Sandbox.create({ language: "javascript" });
    await assert.rejects(sb.fork(0), InvalidOptionsError);
    await assert.rejects(sb.fork(17), InvalidOptionsError);
    await assert.rejects(sb.fork(2, { seeds: [1] }), (e: unknown) => e instanceof InvalidOptionsError && /seeds/.test(e.message));
  });

  it("without a seed: the copy's files are the original's even where the replay computed them afresh", async () => {
    await using sb = await Sandbox.create({ clock: "real" });
    await sb.runCode("import os\ntoken = os.urandom(8).hex()\nopen('/home/user/token.txt', 'w').write(token)");
    const saved = await sb.files.read("/home/user/token.txt");
    const snap = await sb.snapshot();
    await using copy = await Sandbox.restore(snap);
    assert.equal(await copy.files.read("/home/user/token.txt"), saved);
    await snap.remove();
  });

  it("a read-only mount is mounted again, not copied; a read-write mount refuses snapshots", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-nanosnap-"));
    try {
      fs.writeFileSync(path.join(dir, "data.txt"), "host data");
      await using sb = await Sandbox.create({ mounts: [{ hostPath: dir, guestPath: "/home/user/data" }], seed: 3 });
      await sb.runCode("first = open('/home/user/data/data.txt').read()");
      const snap = await sb.snapshot();
      fs.writeFileSync(path.join(dir, "data.txt"), "changed on the host");
      await using copy = await Sandbox.restore(snap);
      assert.equal((await copy.runCode("first")).value, "'changed on the host'", "the replay read the mount as it is now");
      assert.equal(await copy.files.read("/home/user/data/data.txt"), "changed on the host");
      await snap.remove();
      await using rw = await Sandbox.create({ mounts: [{ hostPath: dir, guestPath: "/mnt/rw", readOnly: false }] });
      await assert.rejects(rw.snapshot(), (e: unknown) => e instanceof InvalidOptionsError && /mounts\.0\.readOnly/.test(e.message));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("nano snapshots: replay that does not match, network", () => {
  it("a replayed cell that ends otherwise than it first did fails the restore with a ReplayError naming it", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-nanosnap-"));
    try {
      fs.writeFileSync(path.join(dir, "flag.txt"), "ok");
      await using sb = await Sandbox.create({ mounts: [{ hostPath: dir, guestPath: "/home/user/in" }], seed: 4 });
      await sb.runCode("x = 1");
      await sb.runCode("if open('/home/user/in/flag.txt').read() != 'ok':\n    raise RuntimeError('flag changed')");
      const snap = await sb.snapshot();
      fs.writeFileSync(path.join(dir, "flag.txt"), "changed");
      await assert.rejects(Sandbox.restore(snap), (e: unknown) => e instanceof ReplayError && e.cell === 2 && e.guestError?.name === "RuntimeError" && /cell 2/.test(e.message));
      assert.equal((await sb.runCode("x")).value, "1", "the snapshotted sandbox is not affected");
      await snap.remove();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a replayed host write that now fails kills the copy's worker and fails the restore with a ReplayError caused by the FileSystemError; the next restore works", async (t) => {
    if (process.platform !== "linux") return t.skip("counts worker processes through /proc (Linux only)");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-nanosnap-"));
    // Workers of a sandbox with this mount are the only processes whose command line names `dir`.
    const workersOfDir = () =>
      fs.readdirSync("/proc").filter((p) => {
        if (!/^[0-9]+$/.test(p)) return false;
        try {
          return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dir);
        } catch {
          return false; // ended while listed
        }
      }).length;
    try {
      fs.writeFileSync(path.join(dir, "flag.txt"), "ok");
      await using sb = await Sandbox.create({ mounts: [{ hostPath: dir, guestPath: "/home/user/in" }], seed: 6 });
      // The replay makes /home/user/d a file instead of a directory when the flag changed: the cell
      // still ends as it first did, but the host's write into d/ that followed cannot be repeated.
      assert.equal((await sb.runCode("import os\nif open('/home/user/in/flag.txt').read() == 'ok':\n    os.makedirs('/home/user/d')\nelse:\n    open('/home/user/d', 'w').write('x')")).error, undefined);
      await sb.files.write("/home/user/d/f.txt", "from the host");
      await sb.runCode("after = 1");
      const snap = await sb.snapshot();
      assert.equal(workersOfDir(), 1);
      fs.writeFileSync(path.join(dir, "flag.txt"), "changed");
      await assert.rejects(
        Sandbox.restore(snap),
        (e: unknown) => e instanceof ReplayError && e.cause instanceof FileSystemError && e.cause.path === "/home/user/d/f.txt" && /host's write of "\/home\/user\/d\/f\.txt"/.test(e.message),
      );
      assert.equal(workersOfDir(), 1, "the failed copy's worker is gone; the original's runs on");
      fs.writeFileSync(path.join(dir, "flag.txt"), "ok");
      await using copy = await Sandbox.restore(snap);
      assert.equal(await copy.files.read("/home/user/d/f.txt"), "from the host");
      assert.equal((await copy.runCode("after")).value, "1");
      assert.equal(workersOfDir(), 2);
      await snap.remove();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("replayed cells go to the worker together, each under its own time limit: one that no longer ends fails the restore naming it", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-nanosnap-"));
    try {
      fs.writeFileSync(path.join(dir, "flag.txt"), "ok");
      await using sb = await Sandbox.create({ mounts: [{ hostPath: dir, guestPath: "/home/user/in" }], seed: 5 });
      await sb.runCode("x = 1");
      await sb.runCode("while open('/home/user/in/flag.txt').read() != 'ok':\n    pass", { timeoutMs: 1500 });
      await sb.runCode("y = 2");
      const snap = await sb.snapshot();
      fs.writeFileSync(path.join(dir, "flag.txt"), "changed");
      await assert.rejects(Sandbox.restore(snap), (e: unknown) => e instanceof ReplayError && e.cell === 2 && /cell 2/.test(e.message) && /1500 ms/.test(e.message));
      fs.writeFileSync(path.join(dir, "flag.txt"), "ok");
      await using copy = await Sandbox.restore(snap);
      assert.equal((await copy.runCode("x + y")).value, "3");
      await snap.remove();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("replayed cells repeat their requests; the copy's network log starts empty", async () => {
    let hits = 0;
    const server = http.createServer((_req, res) => {
      hits++;
      res.end(`hit ${hits}`);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const { port } = server.address() as AddressInfo;
      await using sb = await Sandbox.create({ language: "javascript", network: { allow: [`127.0.0.1:${port}`] }, seed: 2 });
      await sb.runCode(`globalThis.body = await (await fetch("http://127.0.0.1:${port}/")).text()`);
      assert.equal(sb.network.log().length, 1);
      const snap = await sb.snapshot();
      await using copy = await Sandbox.restore(snap);
      assert.equal(hits, 2, "the replay made the request again");
      assert.deepEqual(copy.network.log(), []);
      assert.equal((await copy.runCode("body")).value, JSON.stringify("hit 2"), "the copy holds what its replay received");
      assert.equal(sb.network.log().length, 1);
      await snap.remove();
    } finally {
      server.close();
    }
  });
});

describe("sb.id", () => {
  it("every sandbox gets its own sb_ + 24 hex id at creation", async () => {
    const sbs = await Promise.all([Sandbox.create(), Sandbox.create({ language: "javascript" }), Sandbox.create()]);
    try {
      for (const sb of sbs) assert.match(sb.id, ID);
      assert.equal(new Set(sbs.map((s) => s.id)).size, 3);
    } finally {
      await Promise.all(sbs.map((s) => s.kill()));
    }
  });
});

describe("heavy tier: fork", { skip: skipHeavy }, () => {
  before(() => ensureImage(), { timeout: 30 * 60_000 });

  it("[gVisor] fork(2) with seeds: copies with state and files, own ids, own random streams, independent", { timeout: 180_000 }, async () => {
    await using sb = await Sandbox.create({ tier: "heavy", backend: "gvisor", seed: 5 });
    await sb.runCode("import random\nx = 1");
    await sb.files.write("/home/user/state.txt", "saved");
    const forks = await sb.fork(2, { seeds: [11, 12] });
    try {
      const [a, b] = forks as [Sandbox, Sandbox];
      assert.equal(new Set([sb.id, a.id, b.id]).size, 3);
      for (const f of forks) {
        assert.match(f.id, ID);
        assert.equal((await f.runCode("x")).value, "1");
        assert.equal(await f.files.read("/home/user/state.txt"), "saved");
      }
      const [ra, rb] = [(await a.runCode("random.random()")).value, (await b.runCode("random.random()")).value];
      assert.notEqual(ra, rb);
      await a.runCode("x = 2");
      assert.equal((await b.runCode("x")).value, "1");
      assert.equal((await sb.runCode("x")).value, "1");
    } finally {
      await Promise.all(forks.map((f) => f.kill()));
    }
  });
});
