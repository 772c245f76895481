// HeavyEngine over an in-memory HeavyBackend: what the engine does for every backend (configure
// message, seeds for clones, naming a dead sandbox's error, swapping in the sandbox a checkpoint
// continues in, disposal), without gVisor or QEMU. The fake backend is also the smallest example
// of what a new heavy backend implements.
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { MemoryLimitError, WorkerCrashedError } from "../../src/errors.js";
import { heavyLimitsSchema } from "../../src/policy/options.js";
import type { AgentRequest } from "../../src/protocol/agent.js";
import { encodeFrame, FrameDecoder } from "../../src/protocol/frames.js";
import { AgentClient, type OutputListener } from "../../src/engines/heavy/agent-client.js";
import type { AgentFinal } from "../../src/engines/heavy/agent-session.js";
import type { AgentConfigExtras, HeavyBackend, HeavySavedState } from "../../src/engines/heavy/backend.js";
import { HeavyEngine } from "../../src/engines/heavy/engine.js";

/** A guest agent in memory: answers pings, configures, file reads, exec of `echo`, and runs as a test scripts them. */
class FakeBackend implements HeavyBackend<{ name: string }> {
  readonly info = { backend: "gvisor" as const };
  readonly noun = "fake sandbox";
  readonly client: AgentClient;
  readonly agentConfig: AgentConfigExtras = { processMemoryMb: 64 };
  readonly seen: AgentRequest[] = [];
  failure: Error | undefined;
  onDeath: ((e: Error) => void) | undefined;
  disposed: Error | undefined;
  private readonly toGuest = new PassThrough();
  private readonly toHost = new PassThrough();
  private readonly decoder = new FrameDecoder(1 << 20);
  private end!: () => void;
  private readonly ended = new Promise<void>((r) => (this.end = r));

  constructor(
    readonly name: string,
    readonly cloned: boolean,
    private readonly behaviour: { dieOnExec?: Error; onRun?: (m: Extract<AgentRequest, { type: "run" }>, say: (o: unknown) => void) => void } = {},
  ) {
    this.client = new AgentClient(this.toHost, this.toGuest);
    this.toGuest.on("data", (d: Buffer) => {
      for (const m of this.decoder.push(d) as AgentRequest[]) this.answer(m);
    });
  }

  get pid(): number | undefined {
    return undefined;
  }

  get resources() {
    return { name: this.name };
  }

  get endedReason(): string | undefined {
    return this.disposed || this.failure ? (this.failure ?? this.disposed)!.message : undefined;
  }

  private answer(m: AgentRequest): void {
    this.seen.push(m);
    const say = (o: unknown) => this.toHost.write(encodeFrame(o));
    if (m.type === "ping") say({ type: "pong", id: m.id });
    else if (m.type === "configure") say({ type: "reply", id: m.id, ok: true });
    else if (m.type === "fs") say({ type: "reply", id: m.id, ok: true, data: Buffer.from(this.name).toString("base64") });
    else if (m.type === "exec") {
      if (this.behaviour.dieOnExec) {
        // The sandbox dies mid-request; its backend learns why a moment later.
        this.client.fail(new WorkerCrashedError("channel closed"));
        setTimeout(() => {
          this.failure = this.behaviour.dieOnExec;
          this.onDeath?.(this.failure!);
          this.end();
        }, 20);
        return;
      }
      say({ type: "output", id: m.id, stream: "stdout", data: Buffer.from(m.argv.slice(1).join(" ") + "\n").toString("base64") });
      say({ type: "exit", id: m.id, exitCode: 0, signal: null });
    } else if (m.type === "run") this.behaviour.onRun?.(m, say);
  }

  request(msg: AgentRequest, onOutput?: OutputListener): Promise<AgentFinal> {
    return this.client.request(msg, onOutput);
  }

  exited(): Promise<void> {
    return this.ended;
  }

  async checkpoint(): Promise<{ saved: HeavySavedState<{ name: string }>; next: HeavyBackend<{ name: string }> }> {
    await this.dispose(new WorkerCrashedError("checkpointed"));
    const saved = { restore: async () => new FakeBackend(`${this.name}'`, true), remove: async () => undefined };
    return { saved, next: await saved.restore() };
  }

  ref(): void {}

  async dispose(reason: Error): Promise<void> {
    this.disposed ??= reason;
    this.client.fail(reason);
    this.end();
  }
}

const config = { limits: heavyLimitsSchema.parse({}), env: { A: "1" }, seed: null };
const configureOf = (b: FakeBackend) => b.seen.find((m) => m.type === "configure") as Extract<AgentRequest, { type: "configure" }>;

describe("HeavyEngine over a backend", () => {
  it("configures the agent with env, the backend's limits, and no seed for a fresh sandbox", async () => {
    const b = new FakeBackend("a", false);
    const e = await HeavyEngine.start(b, config);
    assert.deepEqual({ ...configureOf(b), id: 0 }, { type: "configure", id: 0, env: { A: "1" }, seed: null, processMemoryMb: 64 });
    const r = await e.exec(["echo", "hi"], { timeoutMs: 5000 });
    assert.equal(r.stdout, "hi\n");
    assert.deepEqual(e.resources, { name: "a" });
    await e.dispose();
    assert.equal(e.closedReason, "killed");
  });

  it("a clone gets a random seed unless one was given", async () => {
    const b1 = new FakeBackend("c1", true);
    await (await HeavyEngine.start(b1, config)).dispose();
    assert.equal(typeof configureOf(b1).seed, "number");
    const b2 = new FakeBackend("c2", true);
    await (await HeavyEngine.start(b2, { ...config, seed: 7 })).dispose();
    assert.equal(configureOf(b2).seed, 7);
  });

  it("a request to a sandbox that died fails with the backend's name for the death", async () => {
    const b = new FakeBackend("d", false, { dieOnExec: new MemoryLimitError(128, "the fake sandbox ran out") });
    const e = await HeavyEngine.start(b, config);
    await assert.rejects(e.exec(["echo"], { timeoutMs: 5000 }), MemoryLimitError);
    assert.match(e.closedReason ?? "", /ran out/);
    assert.ok(b.disposed, "the backend was disposed");
  });

  it("a checkpoint that stops the sandbox carries on in the one restored from it", async () => {
    const e = await HeavyEngine.start(new FakeBackend("s", false), config);
    const snap = await e.snapshot();
    assert.equal(e.closedReason, undefined);
    assert.equal(new TextDecoder().decode(await e.readFile("/x")), "s'");
    const clone = (await snap.restore()) as HeavyEngine<{ name: string }>;
    assert.deepEqual(clone.resources, { name: "s'" });
    await snap.remove();
    await assert.rejects(snap.restore(), /removed/);
    await Promise.all([e.dispose(), clone.dispose()]);
  });
});

describe("HeavyEngine: rich results from the guest agent", () => {
  const png = (main = false) => ({ data: { "image/png": Buffer.from("89504e470d0a1a0a", "hex").toString("base64"), "text/plain": "<Pic>" }, main });
  const resultFrame = (id: number, extra: Record<string, unknown> = {}) => ({ type: "result", id, value: null, error: null, durationMs: 1, vfsDigest: "0".repeat(64), ...extra });

  it("display frames reach onResult while the run goes on, in order; malformed or forged ones are dropped with a note", async () => {
    const b = new FakeBackend("r", false, {
      onRun: (m, say) => {
        say({ type: "output", id: m.id, stream: "stdout", data: Buffer.from("before\n").toString("base64") });
        say({ type: "display", id: m.id, result: png() });
        say({ type: "display", id: m.id, result: { data: { "text/html": "<b>x</b>" }, main: false, extra: "smuggled" } });
        say({ type: "display", id: m.id, result: { data: { "image/png": "not base64!" }, main: false } });
        say({ type: "display", id: m.id, result: "junk" });
        say({ type: "display", id: m.id + 1000, result: { data: { "text/plain": "another run's" }, main: false } });
        // The result comes later: the caller has the results before the run ends.
        setTimeout(() => {
          say(resultFrame(m.id, { results: [{ data: { "text/plain": "left over" }, main: true }, { data: { "evil/type": "x" }, main: true }] }));
          say({ type: "display", id: m.id, result: { data: { "text/plain": "after the end" }, main: false } });
        }, 150);
      },
    });
    const e = await HeavyEngine.start(b, config);
    const events: string[] = [];
    let ended = false;
    const seen: { result: unknown; ended: boolean }[] = [];
    const r = await e.run("x", {
      timeoutMs: 5000,
      onStdout: (s) => events.push(`out:${s}`),
      onStderr: (s) => events.push(`err:${s}`),
      onResult: (result) => {
        seen.push({ result, ended });
        events.push(`result:${Object.keys(result.data).join(",")}`);
      },
    });
    ended = true;
    assert.deepEqual(seen.map((x) => x.ended), [false, false], "both results came before the run ended");
    assert.deepEqual(r.results, [png(), { data: { "text/plain": "left over" }, main: true }]);
    assert.deepEqual(seen.map((x) => x.result), r.results);
    assert.equal(events[0], "out:before\n");
    assert.equal(events[1], "result:image/png,text/plain");
    assert.match(r.stderr, /a malformed result was dropped: a result has only `data` and `main`/);
    assert.match(r.stderr, /a malformed result was dropped: image\/png data must be base64/);
    assert.match(r.stderr, /a malformed result was dropped: a result must be an object/);
    assert.match(r.stderr, /unknown MIME type "evil\/type"/);
    assert.doesNotMatch(JSON.stringify(r), /another run's|after the end|smuggled/);
    assert.equal(r.limitHit, null);
    assert.equal(e.closedReason, undefined, "a bad result is not a protocol error: the sandbox lives on");
    await e.dispose();
  });

  it("results share the output cap with stdout: one that does not fit is dropped (limitHit outputBytes), a later smaller one still passes", async () => {
    const b = new FakeBackend("c", false, {
      onRun: (m, say) => {
        say({ type: "output", id: m.id, stream: "stdout", data: Buffer.from("x".repeat(60)).toString("base64") });
        say({ type: "display", id: m.id, result: { data: { "text/html": "y".repeat(50) }, main: false } });
        say({ type: "display", id: m.id, result: { data: { "text/plain": "z".repeat(30) }, main: false } });
        say(resultFrame(m.id));
      },
    });
    const e = await HeavyEngine.start(b, { ...config, limits: heavyLimitsSchema.parse({ outputBytes: 100 }) });
    const r = await e.run("x", { timeoutMs: 5000 });
    assert.deepEqual(r.results, [{ data: { "text/plain": "z".repeat(30) }, main: false }]);
    assert.equal(r.limitHit, "outputBytes");
    assert.match(r.stderr, /a result of 50 bytes did not fit in the output limit \(limits\.outputBytes\)/);
    await e.dispose();
  });

  it("a display frame that breaks the frame schema ends the channel as any invalid message does", async () => {
    const b = new FakeBackend("p", false, {
      onRun: (m, say) => say({ type: "display", id: "one", result: png() }),
    });
    const e = await HeavyEngine.start(b, config);
    await assert.rejects(e.run("x", { timeoutMs: 5000 }), /guest agent sent an invalid message/);
    await e.dispose();
  });
});
