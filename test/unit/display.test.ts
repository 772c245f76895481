// Rich results' protocol checks (protocol/display.ts, the worker and agent schemas), and the one
// Python display implementation kept as the same text in the nano runner and the heavy agent.
import assert from "node:assert/strict";
import fs from "node:fs";
import { describe, it } from "node:test";
import { agentMessageSchema } from "../../src/protocol/agent.js";
import { displayResultProblem, MAX_RESULTS, ResultGate, type DisplayResult } from "../../src/protocol/display.js";
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

  it("a worker's display frame with a malformed result is a protocol error (the worker checks first); a good one parses", () => {
    assert.equal(workerMessageSchema.safeParse({ type: "display", id: 1, result: ok({ "text/plain": "a" }, true) }).success, true);
    assert.equal(workerMessageSchema.safeParse({ type: "display", id: 1, result: { data: { "image/gif": "R0lG" }, main: false } }).success, false);
    assert.equal(workerMessageSchema.safeParse({ type: "display", id: 1, result: "junk" }).success, false);
    const frame = { type: "result", id: 1, value: null, error: null, limitHit: null, durationMs: 1, vfsDigest: "0".repeat(64) };
    assert.equal(workerMessageSchema.safeParse({ ...frame, results: [ok({ "text/plain": "a" })] }).success, false, "results travel in display frames only");
  });

  it("the agent's display frames and leftover results pass the frame schema whatever they hold: the host checks each", () => {
    assert.equal(agentMessageSchema.safeParse({ type: "display", id: 1, result: { data: 1 } }).success, true);
    assert.equal(agentMessageSchema.safeParse({ type: "display", id: 1, result: ok({ "text/plain": "a" }), extra: 1 }).success, false);
    const m = agentMessageSchema.parse({ type: "result", id: 1, value: null, error: null, durationMs: 1, results: [ok({ "text/plain": "a" }), { data: 1 }], resultsCut: false });
    assert.equal(m.type === "result" && m.results?.length, 2);
  });

  it("the gate keeps well-formed results in order while they fit, passes each on at once, and notes each it drops", () => {
    let room = 10;
    const passed: DisplayResult[] = [];
    const notes: string[] = [];
    const gate = new ResultGate({ room: () => room, charge: (n) => (room -= n) }, (t) => notes.push(t), (r) => passed.push(r));
    gate.add(ok({ "text/plain": "aaaa" }));
    gate.add({ data: { "text/plain": 1 }, main: false });
    gate.add(ok({ "text/plain": "bbbbbbbb" }));
    gate.add(ok({ "text/plain": "c" }, true));
    assert.deepEqual(gate.results, [ok({ "text/plain": "aaaa" }), ok({ "text/plain": "c" }, true)]);
    assert.deepEqual(passed, gate.results);
    assert.equal(room, 5);
    assert.equal(gate.cut, true);
    assert.match(notes[0]!, /malformed result was dropped: text\/plain data must be a string/);
    assert.match(notes[1]!, /a result of 8 bytes did not fit in the output limit \(limits\.outputBytes\)/);
    assert.equal(notes.length, 2);
  });

  it("the gate looks at MAX_RESULTS results at most, with one note for the rest", () => {
    const notes: string[] = [];
    const gate = new ResultGate({ room: () => 1e9, charge: () => undefined }, (t) => notes.push(t));
    for (let i = 0; i < MAX_RESULTS + 5; i++) gate.add(ok({ "text/plain": "x" }));
    assert.equal(gate.results.length, MAX_RESULTS);
    assert.deepEqual(notes, [`display: only the first ${MAX_RESULTS} results are kept\n`]);
  });

  it("the gate keeps a copy of what it checked, nothing the guest attached", () => {
    const gate = new ResultGate({ room: () => 100, charge: () => undefined }, () => undefined);
    const raw = JSON.parse('{"data": {"text/plain": "a"}, "main": false}') as DisplayResult;
    gate.add(raw);
    raw.data["text/html"] = "<b>later</b>";
    assert.deepEqual(gate.results, [ok({ "text/plain": "a" })]);
  });
});

describe("display results: one Python implementation", () => {
  it("guest/display.py is the only copy: the nano runner and the heavy agent load it, neither carries its own", () => {
    const read = (file: string) => fs.readFileSync(new URL(`../../${file}`, import.meta.url), "utf8");
    assert.match(read("guest/display.py"), /^def _make_display\(/m);
    for (const file of ["src/worker/python-guest.ts", "guest/agent.py"]) assert.doesNotMatch(read(file), /def _make_display\([^)]*\):\n +# Jupyter-style/, file);
    assert.match(read("guest/agent.py"), /"display\.py"/);
    assert.match(read("src/worker/python-worker.ts"), /"\.\/display\.py"/);
  });
});
