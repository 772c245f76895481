// The HTTP server's pure parts: the error → status table, API keys (parsing, constant-time lookup).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import {
  AbortedError,
  FileSystemError,
  FileSystemQuotaError,
  InvalidOptionsError,
  MemoryLimitError,
  OutputLimitError,
  ProtocolError,
  SandboxClosedError,
  TierUnavailableError,
  TimeoutError,
  WorkerCrashedError,
} from "../../src/index.js";
import { HttpError, toHttp } from "../../src/server/http-errors.js";
import { KeyRing, loadKeys } from "../../src/server/keys.js";
import { isLoopback } from "../../src/server/index.js";

describe("server error table", () => {
  it("maps every library error to a status and a JSON body naming the problem", () => {
    const cases: [Error, number, string, Record<string, unknown>][] = [
      [new InvalidOptionsError([{ path: "limits.memoryMb", message: "too small" }]), 400, "INVALID_OPTIONS", { issues: [{ path: "limits.memoryMb", message: "too small" }] }],
      [new TimeoutError(300), 422, "TIMEOUT", { limit: "timeoutMs", value: 300, sandboxClosed: true }],
      [new MemoryLimitError(128), 422, "MEMORY_LIMIT", { limit: "memoryMb", value: 128, sandboxClosed: true }],
      [new OutputLimitError(10), 422, "OUTPUT_LIMIT", { limit: "outputBytes", value: 10 }],
      [new FileSystemQuotaError("vfsBytes", 100, "/a"), 413, "FS_QUOTA", { limit: "vfsBytes", value: 100 }],
      [new FileSystemError("/a", "ENOENT", "no such file or directory"), 404, "FS_ERROR", { errno: "ENOENT" }],
      [new FileSystemError("/a", "EISDIR", "is a directory"), 409, "FS_ERROR", { errno: "EISDIR" }],
      [new FileSystemError("/a", "EROFS", "read-only"), 403, "FS_ERROR", {}],
      [new SandboxClosedError("killed"), 410, "SANDBOX_CLOSED", {}],
      [new TierUnavailableError("no heavy tier here"), 501, "TIER_UNAVAILABLE", {}],
      [new AbortedError(), 400, "ABORTED", {}],
      [new WorkerCrashedError("boom"), 500, "WORKER_CRASHED", { sandboxClosed: true }],
      [new ProtocolError("bad frame"), 500, "PROTOCOL_ERROR", {}],
      [new HttpError(429, "CAPACITY", "full", {}, { "retry-after": "1" }), 429, "CAPACITY", {}],
    ];
    for (const [err, status, code, extra] of cases) {
      const r = toHttp(err);
      assert.equal(r.status, status, code);
      assert.equal(r.body.error.code, code);
      assert.equal(r.body.error.message, err.message);
      for (const [k, v] of Object.entries(extra)) assert.deepEqual(r.body.error[k], v, `${code}.${k}`);
    }
  });

  it("hides the details of unexpected errors", () => {
    const r = toHttp(new Error("secret path /home/x"));
    assert.equal(r.status, 500);
    assert.equal(r.body.error.code, "INTERNAL");
    assert.doesNotMatch(r.body.error.message, /secret/);
  });
});

describe("API keys", () => {
  const ring = KeyRing.fromEntries([
    { name: "alice", key: "alice-key-0123456789", maxSandboxes: 2 },
    { name: "bob", sha256: createHash("sha256").update("bob-key-0123456789").digest("hex") },
  ]);

  it("authenticates by key or by its SHA-256, with the key's quotas (defaults filled in)", () => {
    assert.deepEqual(ring.authenticate("alice-key-0123456789"), { name: "alice", quota: { maxSandboxes: 2, maxMemoryMb: 1024, maxRunMs: 300_000, maxCpus: 2, maxDiskMb: 1024, maxSnapshots: 16, maxSnapshotMb: 4096 } });
    assert.equal(ring.authenticate("bob-key-0123456789")?.name, "bob");
    assert.equal(ring.authenticate("alice-key-012345678"), undefined);
    assert.equal(ring.authenticate(""), undefined);
    assert.equal(ring.authenticate(undefined), undefined);
    assert.equal(ring.open, false);
  });

  it("no keys: open mode, one anonymous principal", () => {
    const none = KeyRing.none();
    assert.equal(none.open, true);
    assert.equal(none.authenticate(undefined)?.name, "anonymous");
  });

  it("reads AGENTBOX_API_KEYS as JSON or a comma list; rejects bad entries naming the field", () => {
    assert.equal(loadKeys(undefined, { AGENTBOX_API_KEYS: "first-key-0123456789, second-key-0123456789" }).authenticate("second-key-0123456789")?.name, "key2");
    assert.equal(loadKeys(undefined, { AGENTBOX_API_KEYS: '{"keys":[{"name":"x","key":"xxxxxxxxxxxxxxxx"}]}' }).size, 1);
    assert.equal(loadKeys(undefined, {}).open, true);
    assert.throws(() => loadKeys(undefined, { AGENTBOX_API_KEYS: "short" }), /at least|16/);
    assert.throws(() => loadKeys(undefined, { AGENTBOX_API_KEYS: '{"keys":[{"name":"x","key":"xxxxxxxxxxxxxxxx","sha256":"00"}]}' }), /keys\.0/);
    assert.throws(() => loadKeys(undefined, { AGENTBOX_API_KEYS: '{"keys":[{"name":"x","key":"xxxxxxxxxxxxxxxx"},{"name":"x","key":"yyyyyyyyyyyyyyyy"}]}' }), /appears twice/);
    assert.throws(() => loadKeys("/no/such/file.json", {}), /cannot read API key file/);
  });

  it("knows loopback addresses", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) assert.equal(isLoopback(h), true, h);
    for (const h of ["0.0.0.0", "::", "10.0.0.1", "example.com"]) assert.equal(isLoopback(h), false, h);
  });
});
