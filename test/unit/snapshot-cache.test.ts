import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { pruneSnapshots } from "../../src/engines/python-wasm/runtime.js";

test("pruneSnapshots deletes other snapshots unused for a day and keeps the rest", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-cache-"));
  try {
    const make = (name: string, ageHours: number) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, "x");
      const t = new Date(Date.now() - ageHours * 3600 * 1000);
      fs.utimesSync(f, t, t);
      return f;
    };
    const current = make("pyodide-1-current.snapshot", 48);
    make("pyodide-0-old.snapshot", 25);
    make("pyodide-2-recent.snapshot", 1);
    make("notes.txt", 100);
    pruneSnapshots(current);
    assert.deepEqual(fs.readdirSync(dir).sort(), ["notes.txt", "pyodide-1-current.snapshot", "pyodide-2-recent.snapshot"]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
