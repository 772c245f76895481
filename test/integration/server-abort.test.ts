// The HTTP API in-process: a client that gives up on POST /run (its request's signal aborts, as
// when the connection closes) interrupts the run, and the sandbox is free for the next request.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Sandbox } from "../../src/index.js";
import { createApp } from "../../src/server/app.js";
import { KeyRing } from "../../src/server/keys.js";
import { ServerMetrics } from "../../src/server/metrics.js";
import { SandboxRegistry } from "../../src/server/registry.js";

describe("POST /run honours the request's abort signal", () => {
  const metrics = new ServerMetrics(() => 0, () => 0);
  const registry = new SandboxRegistry({ maxSandboxes: 2, maxHeavySandboxes: 1, maxQueue: 2, queueTimeoutMs: 5000, maxConcurrentStarts: 1 }, metrics);
  const app = createApp({ keys: KeyRing.none(), registry, metrics, version: "0", maxJsonBytes: 1 << 20, maxUploadBytes: 1 << 20, mountRoots: [], netAllow: [], log: () => undefined });
  after(() => registry.closeAll());

  it("an aborted request stops its run; the next run answers at once", async () => {
    await Sandbox.configurePool({ size: 0 });
    const post = (url: string, body: unknown, signal?: AbortSignal) =>
      app.request(url, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" }, ...(signal ? { signal } : {}) });
    const { id } = (await (await post("/sandboxes", { limits: { timeoutMs: 30_000 } })).json()) as { id: string };
    await post(`/sandboxes/${id}/run`, { code: "x = 41" });
    const ac = new AbortController();
    const t0 = performance.now();
    const spinning = post(`/sandboxes/${id}/run`, { code: "while True: pass", timeoutMs: 25_000 }, ac.signal);
    setTimeout(() => ac.abort(), 1000);
    const aborted = await spinning;
    // Nobody reads this answer (the client has gone); what matters is that the run stopped.
    const body = (await aborted.json()) as { durationMs?: number; error?: { name?: string; code?: string } };
    if (aborted.status === 200) {
      assert.equal(body.error?.name, "KeyboardInterrupt", JSON.stringify(body));
      assert.ok(body.durationMs! < 5000);
    } else assert.equal(body.error?.code, "ABORTED", JSON.stringify(body));
    const next = await post(`/sandboxes/${id}/run`, { code: "x + 1" });
    assert.equal(((await next.json()) as { value: string }).value, "42");
    assert.ok(performance.now() - t0 < 8000, "the aborted run did not go on to its time limit");
  });
});
