// Rich results' protocol checks (protocol/display.ts, the worker and agent schemas), and the one
// Python display implementation kept as the same text in the nano runner and the heavy agent.
import assert from "node:assert/strict";
import fs from "node:fs";
import { describe, it } from "node:test";
import { agentMessageSchema } from "../../src/protocol/agent.js";
import { checkResults, displayResultProblem, keepResultsWithin, type DisplayResult } from "../../src/protocol/display.js";
import { workerMessageSchema } from "../../src/protocol/messages.js";

const ok = (data: Record<string, string>, main = false): DisplayResult => ({ data, main });

describe("display results: checks", () => {
  it("accepts the allowed MIME types, rejects the rest with a reason", () => {
    assert.equal(displayResultProblem(ok({ "text/html": "<b>", "image/png": "iVBORw==", "application/json": "{}" })), null);
    assert.match(displayResultProblem(ok({ "text/x-evil": "a" }))!, /unknown MIME type/);
    assert.match(displayResultProblem({ data: { "text/html": 5 }, main: false })!, /must be a string/);
    assert.match(displayResultProblem(ok({ "image/png": "not base64" }))!, /base64/);
    assert.match(displayResultProblem(ok({ "image/png": "abc" }))!, /base64/);
    assert.match(displayResultProblem({ data: {}, main: true })!, /empty/);
    assert.match(displayResultProblem({ data: { "text/plain": "a" }, main: 1 })!, /main/);
    assert.match(displayResultProblem({ data: { "text/plain": "a" }, main: true, x: 1 })!, /only/);
    assert.match(displayResultProblem(JSON.parse('{"data": {"__proto__": "x"}, "main": true}'))!, /unknown MIME type "__proto__"/);
    assert.match(displayResultProblem([1])!, /object/);
  });

  it("a worker result frame with a malformed result is a protocol error; a good one parses", () => {
    const frame = { type: "result", id: 1, value: null, error: null, limitHit: null, durationMs: 1, vfsDigest: "0".repeat(64) };
    assert.equal(workerMessageSchema.safeParse({ ...frame, results: [ok({ "text/plain": "a" }, true)] }).success, true);
    assert.equal(workerMessageSchema.safeParse({ ...frame, results: [{ data: { "image/gif": "R0lG" }, main: false }] }).success, false);
    assert.equal(workerMessageSchema.safeParse({ ...frame, results: "junk" }).success, false);
  });

  it("the agent's results are passed through for the host to check one by one (a bad one is dropped with a note)", () => {
    const m = agentMessageSchema.parse({ type: "result", id: 1, value: null, error: null, durationMs: 1, results: [ok({ "text/plain": "a" }), { data: 1 }], resultsCut: false });
    const notes: string[] = [];
    assert.equal(m.type, "result");
    const kept = checkResults(m.type === "result" ? m.results : [], (t) => notes.push(t));
    assert.deepEqual(kept, [ok({ "text/plain": "a" })]);
    assert.match(notes.join(""), /malformed result was dropped/);
  });

  it("results are kept in order while they fit; the first that does not and all after it are dropped", () => {
    const rs = [ok({ "text/plain": "aaaa" }), ok({ "text/plain": "bbbbbbbb" }), ok({ "text/plain": "c" })];
    assert.deepEqual(keepResultsWithin(rs, 100), { results: rs, cut: false });
    assert.deepEqual(keepResultsWithin(rs, 10), { results: [rs[0]], cut: true });
    assert.deepEqual(keepResultsWithin(rs, -1), { results: undefined, cut: true });
    assert.deepEqual(keepResultsWithin([], 0), { results: undefined, cut: false });
  });
});

describe("display results: one Python implementation", () => {
  it("guest/display.py is the only copy: the nano runner and the heavy agent load it, neither carries its own", () => {
    const read = (file: string) => fs.readFileSync(new URL(`../../${file}`, import.meta.url), "utf8");
    assert.match(read("guest/display.py"), /^def _make_display\(\):/m);
    for (const file of ["src/worker/python-guest.ts", "guest/agent.py"]) assert.doesNotMatch(read(file), /def _make_display\(\):\n +# Jupyter-style/, file);
    assert.match(read("guest/agent.py"), /"display\.py"/);
    assert.match(read("src/worker/python-worker.ts"), /"\.\/display\.py"/);
  });
});
