// The route table drives both the Hono app and the OpenAPI paths: every entry is served, and the
// document lists exactly the table's operations.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { createApp } from "../../src/server/app.js";
import { KeyRing } from "../../src/server/keys.js";
import { ServerMetrics } from "../../src/server/metrics.js";
import { SandboxRegistry } from "../../src/server/registry.js";
import { openApiDocument, ROUTES } from "../../src/server/routes.js";

describe("route table", () => {
  const metrics = new ServerMetrics(() => 0, () => 0);
  const registry = new SandboxRegistry({ maxSandboxes: 1, maxHeavySandboxes: 1, maxQueue: 1, queueTimeoutMs: 1000, maxConcurrentStarts: 1 }, metrics);
  const app = createApp({ keys: KeyRing.none(), registry, metrics, version: "0", maxJsonBytes: 1 << 16, maxUploadBytes: 1 << 16, mountRoots: [], netAllow: [], log: () => undefined });
  after(() => registry.closeAll());

  it("the document's operations are the table's", () => {
    const paths = openApiDocument("0").paths as Record<string, Record<string, { operationId?: string }>>;
    const ops = Object.values(paths).flatMap((item) => Object.entries(item).filter(([k]) => k !== "parameters").map(([, op]) => op.operationId));
    assert.deepEqual(ops.sort(), Object.keys(ROUTES).sort());
  });

  it("every entry is a route of the app (a missing sandbox is a 404 naming it, not 'no route')", async () => {
    for (const [id, r] of Object.entries(ROUTES)) {
      const url = r.path.replace("{id}", "sb_missing") + ("query" in r ? "?path=/x" : "");
      // An invalid body: POST /sandboxes answers 400 instead of starting a sandbox.
      const res = await app.request(url, { method: r.method.toUpperCase(), ...(r.method === "post" || r.method === "put" ? { body: JSON.stringify({ bogus: 1 }) } : {}) });
      const text = await res.text();
      assert.ok(!text.includes("no route"), `${id}: ${r.method} ${r.path} answered ${res.status} ${text}`);
      if (r.path.includes("{id}")) assert.equal(res.status, 404, `${id}: ${text}`);
    }
  });
});
