// The guest side of the shared cases: for each guest language, the snippet a case runs and what
// it must give. A case in ./shared.ts is written once against this table and so runs on every
// engine (the heavy tier runs Python). Values are what runCode reports: Python's repr, JSON for
// JavaScript/TypeScript.

export type Language = "python" | "javascript" | "typescript";

/** What a guest error must carry: its name, or (QuickJS's interrupt) its message. */
export interface ExpectedError {
  name?: string;
  message?: string | RegExp;
}

export interface Snippets {
  /** The value runCode reports for the string `s`. */
  str(s: string): string;
  /** Binds `x` to 41 (no value); `useX` then gives "42". */
  setX: string;
  useX: string;
  /** A trailing expression of a string: 'aaa'. */
  strValue: string;
  /** A trailing expression whose value is None / undefined: no value. */
  noValue: string;
  /** Prints out1 and out2 to stdout, err1 to stderr between them. */
  outErr: string;
  /** Prints "before" (flushed), waits 600 ms of real time, prints "after". */
  printSleepPrint: string;
  /** Prints "a" then "b" (flushed), then loops without yielding. */
  printPrintLoop: string;
  /** A function `g` defined on line 1 raises on line 2, called on line 4. */
  raise: string;
  raised: ExpectedError & { name: string; message: string };
  /** Where the traceback must point: the user's cell, line 2, in g. */
  tracebackAt: RegExp;
  /** What the traceback must not show: the engine's own frames. */
  tracebackHides: RegExp;
  syntaxError: string;
  /** Reads the text file at `p`: the value is str(contents). */
  readText(p: string): string;
  /** Writes `text` to `p` (its directory exists). */
  writeText(p: string, text: string): string;
  /** The guest's own `mkdir -p` over a file; its value is `mkdirOverFileValue`. */
  mkdirOverFile(p: string): string;
  mkdirOverFileValue: string;
  /** Sets `counter` to 0; `incr` adds one and gives it. */
  counterInit: string;
  incr: string;
  /** A busy loop, inside a catch-all where the language has one; the interrupt must still end it. */
  busyLoop: string;
  interrupted: ExpectedError;
  /** A flood of lines of 100 characters, forever. */
  flood: string;
  /** A trailing expression whose value is 100 000 characters. */
  hugeValue: string;
  /** Allocates past any limit the suite sets (256 MB at most); `memoryFreed` releases what it kept. */
  memoryBomb: string;
  outOfMemory: ExpectedError;
  memoryFreed: string;
  /** Prints "before" to stdout and "warn" to stderr, then ignores every interrupt it can. */
  stubborn: string;
  /** Uses every source of randomness and time the guest has, writes a file, prints what it drew. */
  determinism: string;
}

const python: Snippets = {
  str: (s) => `'${s}'`,
  setX: "x = 41",
  useX: "x + 1",
  strValue: "'a' * 3",
  noValue: "None",
  outErr: "import sys\nprint('out1')\nprint('err1', file=sys.stderr)\nprint('out2')",
  printSleepPrint: "import time\nprint('before', flush=True)\ntime.sleep(0.6)\nprint('after')",
  printPrintLoop: "print('a', flush=True)\nprint('b', flush=True)\nwhile True:\n    pass",
  raise: "def g():\n    raise ValueError('bad value')\n\ng()",
  raised: { name: "ValueError", message: "bad value" },
  tracebackAt: /File "<cell-\d+>", line 2, in g/,
  tracebackHides: /_pyodide|_agentbox|eval_code|agent\.py/,
  syntaxError: "def (:",
  readText: (p) => `open(${JSON.stringify(p)}).read()`,
  writeText: (p, text) => `with open(${JSON.stringify(p)}, 'w') as f:\n    f.write(${JSON.stringify(text)})`,
  mkdirOverFile: (p) => `import os\ntry:\n    os.makedirs(${JSON.stringify(p)}, exist_ok=True)\nexcept OSError as e:\n    r = type(e).__name__\nr`,
  mkdirOverFileValue: "'FileExistsError'",
  counterInit: "counter = 0",
  incr: "counter += 1\ncounter",
  busyLoop: "while True:\n    pass",
  interrupted: { name: "KeyboardInterrupt" },
  flood: "while True:\n    print('y' * 100)",
  hugeValue: "'x' * 100_000",
  memoryBomb: "hog = bytearray(1 << 30)",
  outOfMemory: { name: "MemoryError" },
  memoryFreed: "hog = None\nlen(bytearray(8 << 20))",
  // [heavy] the interrupt is a SIGINT, which the guest can ignore; [nano] it is raised as
  // KeyboardInterrupt, which only the catch-all swallows.
  stubborn: "import signal, sys, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('before')\nprint('warn', file=sys.stderr)\ntime.sleep(0.05)\nwhile True:\n    try:\n        while True: pass\n    except BaseException:\n        pass",
  determinism: `
import random, os, uuid, secrets, time, datetime, hashlib
print(random.random(), random.randint(0, 10**9))
print(os.urandom(8).hex(), uuid.uuid4(), secrets.token_hex(8))
print(time.time(), datetime.datetime.now().isoformat())
print(hash("abc"), hash(("x", 1)), {"b", "a", "c"} == {"a", "b", "c"})
print(list({str(i): i for i in range(5)}), sorted({"z", "y", "x"}))
os.makedirs("/tmp/det", exist_ok=True)
with open("/tmp/det/out.txt", "w") as f:
    f.write(str(random.random()))
print(os.path.getmtime("/tmp/det/out.txt"))
`,
};

const javascript: Snippets = {
  str: (s) => JSON.stringify(s),
  setX: "var x = 41",
  useX: "x + 1",
  strValue: "'a'.repeat(3)",
  noValue: "undefined",
  outErr: "console.log('out1');\nconsole.error('err1');\nconsole.log('out2')",
  printSleepPrint: "console.log('before');\nawait new Promise((r) => setTimeout(r, 600));\nconsole.log('after')",
  printPrintLoop: "console.log('a');\nconsole.log('b');\nfor (;;) {}",
  raise: "function g() {\n  throw new TypeError('bad value');\n}\ng()",
  raised: { name: "TypeError", message: "bad value" },
  tracebackAt: /at g \(cell-\d+\.js:2:/,
  tracebackHides: /quickjs|js-worker|node:internal/,
  syntaxError: "let y = ;",
  readText: (p) => `import fs from 'fs';\nfs.readFileSync(${JSON.stringify(p)}, 'utf8')`,
  writeText: (p, text) => `import fs from 'fs';\nfs.writeFileSync(${JSON.stringify(p)}, ${JSON.stringify(text)})`,
  mkdirOverFile: (p) => `import fs from 'fs';\ntry { fs.mkdirSync(${JSON.stringify(p)}, { recursive: true }) } catch (e) { e.code }`,
  mkdirOverFileValue: '"EEXIST"',
  counterInit: "var counter = 0",
  incr: "++counter",
  busyLoop: "let n = 0;\ntry { while (true) n++ } catch (e) { 'caught' }",
  interrupted: { message: "interrupted" },
  flood: "while (true) console.log('y'.repeat(100))",
  hugeValue: "'x'.repeat(100_000)",
  memoryBomb: "var hog = [];\nwhile (true) hog.push(new Array(100000).fill(1.5))",
  outOfMemory: { name: "InternalError", message: /out of memory/ },
  memoryFreed: "hog = null;\nnew Array(1000).fill(1).length",
  // Every QuickJS construct reaches the interrupt check, so the hard stop is forced from outside
  // (the case stops the worker process with SIGSTOP once "before" has arrived).
  stubborn: "console.log('before');\nconsole.error('warn');\nfor (;;) {}",
  determinism: `
import fs from "fs";
const a = new Uint32Array(4);
crypto.getRandomValues(a);
console.log(Math.random(), Math.random(), Array.from(a).join(","), crypto.randomUUID());
console.log(Date.now(), new Date().toISOString());
fs.mkdirSync("/tmp/det", { recursive: true });
fs.writeFileSync("/tmp/det/out.txt", String(Math.random()));
await new Promise((r) => setTimeout(r, 1000));
console.log(Date.now());
`,
};

const typescript: Snippets = {
  ...javascript,
  // Type annotations, stripped before the run; line numbers stay the user's.
  setX: "var x: number = 41",
  raise: "function g(): never {\n  throw new TypeError('bad value');\n}\ng()",
  tracebackAt: /at g \(cell-\d+\.ts:2:/,
};

export const snippets: Record<Language, Snippets> = { python, javascript, typescript };
