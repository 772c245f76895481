// A background exec over an in-memory guest agent, without gVisor or QEMU: the `started` message
// (schema-checked, as all the agent says), AgentSession.spawn resolving on it, the output cap, a
// kill through the agent's `kill` request, and a program the agent could not start.
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { InvalidOptionsError, ProtocolError } from "../../src/errors.js";
import { heavyLimitsSchema } from "../../src/policy/options.js";
import type { AgentRequest } from "../../src/protocol/agent.js";
import { encodeFrame, FrameDecoder } from "../../src/protocol/frames.js";
import { AgentClient } from "../../src/engines/heavy/agent-client.js";
import { AgentSession } from "../../src/engines/heavy/agent-session.js";

/** A guest agent the test scripts: `onRequest` gets each request and a way to answer. */
function fakeAgent(onRequest: (m: AgentRequest, say: (o: unknown) => void) => void) {
  const toGuest = new PassThrough();
  const toHost = new PassThrough();
  const client = new AgentClient(toHost, toGuest);
  const decoder = new FrameDecoder(1 << 20);
  const say = (o: unknown) => toHost.write(encodeFrame(o));
  toGuest.on("data", (d: Buffer) => {
    for (const m of decoder.push(d) as AgentRequest[]) onRequest(m, say);
  });
  return { client, say };
}

const b64 = (s: string) => Buffer.from(s).toString("base64");

function session(client: AgentClient, outputBytes = 1 << 20) {
  const limits = heavyLimitsSchema.parse({ outputBytes });
  return new AgentSession({ client, call: (m, o) => client.request(m, o), fail: async (e) => client.fail(e) }, limits, "fake sandbox");
}

describe("background exec over the agent channel", () => {
  it("spawn resolves on `started` with the guest pid, before the exit; kill goes through the agent's kill request", async () => {
    const seen: AgentRequest[] = [];
    let execId = -1;
    const { client } = fakeAgent((m, say) => {
      seen.push(m);
      if (m.type === "exec") {
        execId = m.id;
        say({ type: "started", id: m.id, pid: 42 });
        say({ type: "output", id: m.id, stream: "stdout", data: b64("up\n") });
      } else if (m.type === "kill") {
        say({ type: "reply", id: m.id, ok: true });
        say({ type: "exit", id: m.target, exitCode: 143, signal: "SIGTERM" });
      }
    });
    const out: string[] = [];
    const p = await session(client).spawn(["server"], { onStdout: (c) => out.push(c) });
    assert.equal(p.pid, 42);
    assert.equal((seen[0] as Extract<AgentRequest, { type: "exec" }>).background, true);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(p.output(), { stdout: "up\n", stderr: "" });
    assert.deepEqual(out, ["up\n"]);
    assert.equal(await p.kill("TERM"), true);
    const r = await p.done;
    assert.deepEqual([r.exitCode, r.signal, r.stdout], [143, "SIGTERM", "up\n"]);
    assert.deepEqual(seen.filter((m) => m.type === "kill").map((m) => [(m as { target: number }).target, (m as { signal: string }).signal]), [[execId, "TERM"]]);
    assert.equal(await p.kill("KILL"), false, "it had ended");
  });

  it("a foreground exec does not ask for `started`", async () => {
    const seen: AgentRequest[] = [];
    const { client } = fakeAgent((m, say) => {
      seen.push(m);
      if (m.type === "exec") say({ type: "exit", id: m.id, exitCode: 0, signal: null });
    });
    await session(client).exec(["true"], { timeoutMs: 5000 });
    assert.equal("background" in (seen[0] as object), false);
  });

  it("a program the agent could not start rejects spawn with InvalidOptionsError naming why", async () => {
    const { client } = fakeAgent((m, say) => {
      if (m.type === "exec") say({ type: "exit", id: m.id, exitCode: 127, signal: null, error: "ENOENT: No such file or directory" });
    });
    await assert.rejects(session(client).spawn(["/nope"], {}), (e: unknown) => e instanceof InvalidOptionsError && e.issues[0]?.path === "cmd" && /ENOENT/.test(e.message));
  });

  it("output past limits.outputBytes kills it: a result with limitHit, the output up to the cap", async () => {
    const { client } = fakeAgent((m, say) => {
      if (m.type === "exec") {
        say({ type: "started", id: m.id, pid: 7 });
        say({ type: "output", id: m.id, stream: "stdout", data: b64("x".repeat(300)) });
      } else if (m.type === "kill") say({ type: "exit", id: m.target, exitCode: 137, signal: "SIGKILL" });
    });
    const p = await session(client, 100).spawn(["yes"], {});
    const r = await p.done;
    assert.equal(r.limitHit, "outputBytes");
    assert.equal(r.stdout.length, 100);
  });

  it("a `started` with a bad pid is a protocol violation: the channel fails; one for an id nobody watches is dropped", async () => {
    const { client, say } = fakeAgent(() => undefined);
    say({ type: "started", id: 999, pid: 5 }); // nobody asked
    await new Promise((r) => setImmediate(r));
    assert.equal(client.failed, undefined);
    say({ type: "started", id: 1, pid: 0 });
    await new Promise((r) => setImmediate(r));
    const failed = ((c: AgentClient) => c.failed)(client); // read again: the first read narrowed it to undefined
    assert.ok(failed instanceof ProtocolError, String(failed));
    assert.match(failed.message, /pid/);
  });
});
