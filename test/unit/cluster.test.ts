// Cluster mode's pure parts: which requests name a sandbox or snapshot (and so may be forwarded),
// and the --cluster / --node-id parsing.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { checkNodeId, classify, parseEndpoints } from "../../src/server/cluster/index.js";

const SB = "sb_0123456789abcdef01234567";
const SNAP = "snap_0123456789abcdef01234567";
const none = () => undefined;

describe("cluster: request classification", () => {
  it("native API: creates, lists, sandbox and snapshot routes", () => {
    assert.deepEqual(classify("POST", "/sandboxes", none), { kind: "create", api: "native" });
    assert.deepEqual(classify("GET", "/sandboxes", none), { kind: "list", what: "sandboxes" });
    assert.deepEqual(classify("DELETE", "/sandboxes", none), { kind: "local" });
    for (const p of [`/sandboxes/${SB}`, `/sandboxes/${SB}/run/stream`, `/sandboxes/${SB}/ports/8000/a/b`, `/sandboxes/${encodeURIComponent(SB)}/files`]) {
      assert.deepEqual(classify("POST", p, none), { kind: "sandbox", id: SB, auth: "bearer" }, p);
    }
    assert.deepEqual(classify("GET", "/snapshots", none), { kind: "snapshots" });
    assert.deepEqual(classify("POST", `/snapshots/${SNAP}/restore`, none), { kind: "snapshot", id: SNAP, auth: "bearer" });
  });

  it("ids that are not ids (or undecodable) stay local, for the node's own 404", () => {
    for (const p of ["/sandboxes/sb_short", "/sandboxes/..%2F..", "/sandboxes/%E0%A4%A", `/snapshots/${SB}`, "/sandboxes/SB_0123456789ABCDEF01234567"]) {
      assert.deepEqual(classify("GET", p, none), { kind: "local" }, p);
    }
    for (const p of ["/healthz", "/metrics", "/openapi.json", "/", "/e2b/health"]) assert.deepEqual(classify("GET", p, none), { kind: "local" }, p);
  });

  it("E2B: control plane (v1 and v2), in-sandbox traffic by header, templates, signed files", () => {
    assert.deepEqual(classify("POST", "/e2b/sandboxes", none), { kind: "create", api: "e2b" });
    assert.deepEqual(classify("POST", "/e2b/v2/sandboxes", none), { kind: "create", api: "e2b" });
    assert.deepEqual(classify("GET", "/e2b/v2/sandboxes", none), { kind: "list", what: "e2b-sandboxes" });
    assert.deepEqual(classify("POST", `/e2b/v2/sandboxes/${SB}/connect`, none), { kind: "sandbox", id: SB, auth: "e2b" });
    assert.deepEqual(classify("DELETE", `/e2b/sandboxes/${SB}`, none), { kind: "sandbox", id: SB, auth: "e2b" });
    assert.deepEqual(classify("GET", "/e2b/snapshots", none), { kind: "list", what: "e2b-snapshots" });
    assert.deepEqual(classify("DELETE", `/e2b/templates/${SNAP}`, none), { kind: "snapshot", id: SNAP, auth: "e2b" });
    assert.deepEqual(classify("DELETE", "/e2b/templates/base", none), { kind: "local" });
    const h = (name: string) => (name === "e2b-sandbox-id" ? SB : undefined);
    assert.deepEqual(classify("POST", "/e2b/sandbox/process.Process/Start", h), { kind: "sandbox", id: SB, auth: "token" });
    assert.deepEqual(classify("POST", "/e2b/sandbox/process.Process/Start", none), { kind: "local" });
    assert.deepEqual(classify("GET", "/files", none, "?path=/a&signature=v1_x"), { kind: "signed-files" });
    assert.deepEqual(classify("GET", "/files", none, "?path=/a"), { kind: "local" });
  });
});

describe("cluster: flags", () => {
  it("--cluster takes etcd://, http(s):// and bare host:port lists; the port defaults to 2379", () => {
    assert.deepEqual(parseEndpoints("etcd://10.0.0.1:2379,10.0.0.2:2380"), ["http://10.0.0.1:2379", "http://10.0.0.2:2380"]);
    assert.deepEqual(parseEndpoints("https://etcd.example:2379"), ["https://etcd.example:2379"]);
    assert.deepEqual(parseEndpoints("etcd-0.etcd, etcd-1.etcd"), ["http://etcd-0.etcd:2379", "http://etcd-1.etcd:2379"]);
    assert.throws(() => parseEndpoints(""), /at least one etcd endpoint/);
    assert.throws(() => parseEndpoints("etcd://a b"), /not an etcd endpoint/);
  });

  it("--node-id is a short name of safe characters", () => {
    assert.equal(checkNodeId("agentbox-heavy-0"), "agentbox-heavy-0");
    for (const bad of ["", "-a", "a/b", "a~b", "x".repeat(64)]) assert.throws(() => checkNodeId(bad), /--node-id/, bad);
  });
});
