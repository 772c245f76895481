// Guest-side JavaScript: runs inside QuickJS (never in the worker's own realm) once per sandbox,
// before any guest code. The worker reads this file from dist/ (copied there by `npm run build`)
// and evaluates `(<this file>)`, so its one declaration is a function expression there and leaks
// no global. It installs console, seeded Math.random / crypto, TextEncoder/TextDecoder,
// queueMicrotask, timers, the `fs` modules, the dead zone of rewritten top-level declarations and,
// with a network grant, fetch. It is handed one object of host functions, keeps it in its closure
// (the guest never sees it) and returns the hooks the worker calls: value display, error
// description, the timer queue, fetch answers and module sources. Host functions take and return
// only strings, numbers, booleans and ArrayBuffers; the worker checks every argument.
//
// The guest's `fs` module (import fs from "fs" | "node:fs", or await import("fs"); "fs/promises"
// for the async form):
//   readFileSync(path[, "utf8" | { encoding }])  → string with an encoding, else Uint8Array
//   writeFileSync(path, string | ArrayBuffer | TypedArray[, { flag: "a" }]), appendFileSync
//   readdirSync(path[, { withFileTypes }]) (sorted), existsSync, statSync, mkdirSync(path[, { recursive }]),
//   rmSync(path[, { recursive, force }]), rmdirSync, unlinkSync, renameSync, copyFileSync
// Errors carry a Node-style `code` (ENOENT, EEXIST, ENOSPC for the byte quota, EDQUOT for files;
// in host mounts also EROFS for a read-only mount, EACCES for a path leading outside its mount,
// EXDEV for a rename between a mount and the rest). Mounted host directories appear at their
// guest paths; readdirSync with withFileTypes reports their symlinks (isSymbolicLink()).
//
// The global names "__agentbox_module" and "__agentbox_lexical" are MODULE_GLOBAL and
// LEXICAL_GLOBAL in prelude.ts (a unit test checks they agree).

/* exported prelude */
function prelude(host) {
  "use strict";
  const G = globalThis;
  const hide = (obj, name, value) => Object.defineProperty(obj, name, { value, writable: true, configurable: true, enumerable: false });
  const jsonStringify = JSON.stringify;
  const toStr = String;

  function show(v, max) {
    let s;
    switch (typeof v) {
      case "undefined": return undefined;
      case "string": s = jsonStringify(v); break;
      case "number": s = Object.is(v, -0) ? "-0" : toStr(v); break;
      case "bigint": s = toStr(v) + "n"; break;
      case "boolean": s = toStr(v); break;
      case "symbol": s = v.toString(); break;
      case "function": s = "[Function: " + (v.name || "(anonymous)") + "]"; break;
      default:
        if (v === null) { s = "null"; break; }
        if (v instanceof Error) { s = toStr(v); break; }
        try { s = jsonStringify(v, (_k, x) => typeof x === "bigint" ? toStr(x) : x); } catch { s = undefined; }
        if (s === undefined) { try { s = toStr(v); } catch { s = "[object]"; } }
    }
    return max !== undefined && s.length > max ? s.slice(0, max) : s;
  }

  function describe(e) {
    try {
      if (e instanceof Error) return jsonStringify([toStr(e.name), toStr(e.message), toStr(e.stack || "")]);
    } catch { /* a hostile getter: fall through */ }
    return jsonStringify(["Error", "Uncaught " + show(e, 4096), ""]);
  }

  // console: formatted here, written through the host (which counts bytes against the limit).
  const fmt = (args) => {
    const room = host.outputRoom();
    let out = "";
    for (let i = 0; i < args.length && out.length <= room; i++) {
      const a = args[i];
      out += (i ? " " : "") + (typeof a === "string" ? a : (show(a, room + 1) ?? "undefined"));
    }
    return out.length > room + 1 ? out.slice(0, room + 1) : out;
  };
  const writer = (stream) => function () { host.write(stream, fmt(Array.prototype.slice.call(arguments)) + "\n"); };
  const console = {};
  for (const k of ["log", "info", "debug", "dir", "table"]) console[k] = writer(0);
  for (const k of ["error", "warn", "trace"]) console[k] = writer(1);
  hide(G, "console", console);

  // display(value[, mimeType]): a rich result (Jupyter-style MIME bundle) beside the output, in
  // the run's `results`. With a MIME type, the value is that type's data (a string; base64 or
  // bytes for image/png, image/jpeg, application/pdf; any JSON value for application/json);
  // without, a string is text/plain and an object application/json plus text/plain. The host
  // checks the bundle (a bad one is a TypeError here) and charges it against the output limit.
  const BINARY_TYPES = ["image/png", "image/jpeg", "application/pdf"];
  function display(value, mimeType) {
    if (mimeType !== undefined) {
      const mime = toStr(mimeType);
      if (typeof value === "string") return void host.display(jsonStringify({ [mime]: value }));
      if (BINARY_TYPES.includes(mime) && (value instanceof ArrayBuffer || ArrayBuffer.isView(value))) return void host.display("{}", mime, bytesOf(value));
      if (mime === "application/json") {
        const json = jsonStringify(value);
        if (json === undefined) throw new TypeError("display: the value has no JSON form");
        return void host.display(jsonStringify({ [mime]: json }));
      }
      throw new TypeError("display: " + mime + " data must be a string" + (BINARY_TYPES.includes(mime) ? " (base64) or bytes" : ""));
    }
    const plain = typeof value === "string" ? value : show(value, host.outputRoom() + 1);
    const data = { "text/plain": plain === undefined ? "undefined" : plain };
    if (value !== null && typeof value === "object") {
      let json;
      try { json = jsonStringify(value); } catch { json = undefined; }
      if (json !== undefined) data["application/json"] = json;
    }
    host.display(jsonStringify(data));
  }
  hide(G, "display", display);

  // Randomness: the sandbox's seeded stream.
  Math.random = function random() { return host.random(); };
  const getRandomValues = (ta) => {
    if (!ArrayBuffer.isView(ta) || ta instanceof DataView || ta instanceof Float32Array || ta instanceof Float64Array) {
      throw new TypeError("crypto.getRandomValues: expected an integer TypedArray");
    }
    if (ta.byteLength > 65536) throw new RangeError("crypto.getRandomValues: at most 65536 bytes per call");
    new Uint8Array(ta.buffer, ta.byteOffset, ta.byteLength).set(new Uint8Array(host.randomBytes(ta.byteLength)));
    return ta;
  };
  const randomUUID = () => {
    const b = getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  };
  hide(G, "crypto", { getRandomValues, randomUUID });

  // UTF-8 text (QuickJS has no TextEncoder/TextDecoder).
  const bytesOf = (d) => {
    if (d instanceof ArrayBuffer) return d.slice(0);
    if (ArrayBuffer.isView(d)) return d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength);
    throw new TypeError("expected an ArrayBuffer or a TypedArray");
  };
  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(s = "") { return new Uint8Array(host.encode(toStr(s))); }
  }
  class TextDecoder {
    constructor(label = "utf-8") {
      if (!/^utf-?8$/i.test(toStr(label))) throw new RangeError("TextDecoder: only utf-8 is supported");
    }
    get encoding() { return "utf-8"; }
    decode(d) { return d === undefined ? "" : host.decode(bytesOf(d)); }
  }
  hide(G, "TextEncoder", TextEncoder);
  hide(G, "TextDecoder", TextDecoder);
  hide(G, "queueMicrotask", (fn) => { Promise.resolve().then(fn); });

  // Timers: a queue the worker drains while a run waits, in due-time order, on the sandbox clock.
  let timerSeq = 0;
  const timers = new Map();
  const addTimer = (fn, ms, args, every) => {
    if (typeof fn !== "function") throw new TypeError("timer callback must be a function");
    const delay = Math.max(0, Number(ms) || 0);
    const id = ++timerSeq;
    timers.set(id, { id, due: Date.now() + delay, fn, args, every: every ? Math.max(1, delay) : -1, seq: id });
    return id;
  };
  hide(G, "setTimeout", function setTimeout(fn, ms, ...args) { return addTimer(fn, ms, args, false); });
  hide(G, "setInterval", function setInterval(fn, ms, ...args) { return addTimer(fn, ms, args, true); });
  hide(G, "clearTimeout", function clearTimeout(id) { timers.delete(id); });
  hide(G, "clearInterval", function clearInterval(id) { timers.delete(id); });
  const nextTimer = () => {
    let best;
    for (const t of timers.values()) if (!best || t.due < best.due || (t.due === best.due && t.seq < best.seq)) best = t;
    return best;
  };
  const fireTimer = () => {
    const t = nextTimer();
    if (!t) return false;
    if (!host.advanceTo(t.due)) return true; // woken early by a fetch answer: deliver it first
    if (t.every >= 0) {
      t.due = Date.now() + t.every;
      t.seq = ++timerSeq;
    } else timers.delete(t.id);
    t.fn.apply(undefined, t.args);
    return true;
  };

  // fs over the sandbox's VFS.
  const fsError = (e, op, path) => {
    const m = /^([A-Z]+): /.exec(toStr(e && e.message));
    if (m) {
      e.code = m[1];
      e.syscall = op;
      e.path = path;
    }
    return e;
  };
  const call = (op, path, a, b) => {
    if (typeof path !== "string") throw new TypeError('The "path" argument must be of type string');
    try {
      return host.fs(op, path, a, b);
    } catch (e) {
      throw fsError(e, op, path);
    }
  };
  const encodingOf = (o) => (typeof o === "string" ? o : o && typeof o === "object" ? o.encoding : undefined);
  const dataOf = (d) => (typeof d === "string" ? d : d instanceof ArrayBuffer || ArrayBuffer.isView(d) ? bytesOf(d) : toStr(d));
  const stats = (s) => ({ size: s.size, isFile: () => s.type === "file", isDirectory: () => s.type === "dir", isSymbolicLink: () => s.type === "symlink" });
  const fs = {
    readFileSync(path, o) {
      const enc = encodingOf(o);
      if (enc !== undefined && enc !== null && !/^utf-?8$/i.test(toStr(enc))) throw new TypeError("fs: only the utf8 encoding is supported");
      return enc ? call("readText", path) : new Uint8Array(call("read", path));
    },
    writeFileSync(path, data, o) { call(o && typeof o === "object" && o.flag === "a" ? "append" : "write", path, dataOf(data)); },
    appendFileSync(path, data) { call("append", path, dataOf(data)); },
    readdirSync(path, o) {
      const list = JSON.parse(call("list", path));
      return o && o.withFileTypes ? list.map((e) => ({ name: e.name, ...stats(e) })) : list.map((e) => e.name);
    },
    existsSync(path) { return typeof path === "string" && call("exists", path); },
    statSync(path) { return stats(JSON.parse(call("stat", path))); },
    mkdirSync(path, o) { call("mkdir", path, Boolean(o && o.recursive)); },
    rmSync(path, o) {
      try { call("rm", path, Boolean(o && o.recursive)); } catch (e) { if (!(o && o.force && e.code === "ENOENT")) throw e; }
    },
    rmdirSync(path) { call("rmdir", path); },
    unlinkSync(path) { call("unlink", path); },
    renameSync(from, to) {
      if (typeof to !== "string") throw new TypeError('The "newPath" argument must be of type string');
      call("rename", from, to);
    },
    copyFileSync(from, to) { fs.writeFileSync(to, fs.readFileSync(from)); },
  };
  const promises = {};
  for (const k of Object.keys(fs)) {
    if (k === "existsSync") continue;
    const f = fs[k];
    promises[k.slice(0, -4)] = (...a) => new Promise((res) => res(f(...a)));
  }
  fs.promises = promises;
  const modules = {
    fs: { default: fs, ...fs },
    "fs/promises": { default: promises, ...promises },
  };
  const isModule = (key) => Object.prototype.hasOwnProperty.call(modules, key);
  hide(G, "__agentbox_module", function (key) { return isModule(key) ? modules[key] : undefined; });
  // The text QuickJS compiles for a built-in module (static imports become dynamic ones, so both
  // share one module instance per name).
  const moduleSource = (key) => {
    if (!isModule(key)) {
      const known = Object.keys(modules).map((k) => "'" + k + "'").join(", ");
      throw new Error("Cannot find module '" + toStr(key) + "': this sandbox has only " + known + " (no host modules)");
    }
    const names = Object.keys(modules[key]).filter((k) => k !== "default");
    return "const m = " + "__agentbox_module" + "(" + jsonStringify(key) + ");\n" +
      "export default m.default;\nexport const { " + names.join(", ") + " } = m;\n";
  };

  // Top-level let/const/class of a cell (see js-cell.ts) are configurable global properties, so a
  // later cell may declare them again. From the start of the cell until its declaration runs a
  // name is an accessor that throws, as a binding in its temporal dead zone does. A name already
  // bound by a var, function or import of an earlier cell (not configurable) is left as it is.
  const defineProperty = Object.defineProperty;
  const ownDescriptor = Object.getOwnPropertyDescriptor;
  const rebindable = (name) => { const d = ownDescriptor(G, name); return !d || d.configurable; };
  hide(G, "__agentbox_lexical", {
    enter(names) {
      for (const name of names) {
        if (!rebindable(name)) continue;
        const dead = () => { throw new ReferenceError("Cannot access '" + name + "' before initialization"); };
        defineProperty(G, name, { get: dead, set: dead, enumerable: false, configurable: true });
      }
    },
    init(names, value) {
      for (const name of names) {
        if (rebindable(name)) defineProperty(G, name, { value: undefined, writable: true, enumerable: false, configurable: true });
      }
      return value;
    },
  });

  // fetch: only with a network grant. The host checks every URL and does the request; the guest
  // gets status, headers and the whole body (text/arrayBuffer/json).
  const requests = new Map();
  const jsonParse = JSON.parse;
  let makeResponse;
  if (host.fetch) {
    const norm = (n) => toStr(n).toLowerCase();
    class Headers {
      constructor(init) {
        hide(this, "_map", new Map());
        if (init === undefined || init === null) return;
        const pairs = init instanceof Headers ? Array.from(init) : Array.isArray(init) ? init : Object.keys(init).map((k) => [k, init[k]]);
        for (const p of pairs) {
          if (!p || p.length !== 2) throw new TypeError("Headers: each entry must be a [name, value] pair");
          this.append(p[0], p[1]);
        }
      }
      get(n) { const v = this._map.get(norm(n)); return v === undefined ? null : v; }
      has(n) { return this._map.has(norm(n)); }
      set(n, v) { this._map.set(norm(n), toStr(v)); }
      append(n, v) { const k = norm(n); const old = this._map.get(k); this._map.set(k, old === undefined ? toStr(v) : old + ", " + toStr(v)); }
      delete(n) { this._map.delete(norm(n)); }
      forEach(fn, self) { for (const [k, v] of this) fn.call(self, v, k, this); }
      *entries() { yield* Array.from(this._map.entries()).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)); }
      keys() { return Array.from(this.entries(), (e) => e[0])[Symbol.iterator](); }
      values() { return Array.from(this.entries(), (e) => e[1])[Symbol.iterator](); }
      [Symbol.iterator]() { return this.entries(); }
    }
    class Response {
      constructor(meta, body) {
        this.status = meta.status;
        this.statusText = meta.statusText;
        this.ok = meta.status >= 200 && meta.status < 300;
        this.url = meta.url;
        this.redirected = meta.redirected;
        this.headers = new Headers(meta.headers);
        this.bodyUsed = false;
        hide(this, "_body", body);
      }
      arrayBuffer() {
        if (this.bodyUsed) return Promise.reject(new TypeError("Response: body already read"));
        this.bodyUsed = true;
        return Promise.resolve(this._body.slice(0));
      }
      text() { return this.arrayBuffer().then((b) => host.decode(b)); }
      json() { return this.text().then((t) => jsonParse(t)); }
    }
    const fetch = function fetch(input, init) {
      return new Promise((resolve, reject) => {
        const o = init === undefined || init === null ? {} : init;
        const url = typeof input === "string" ? input : input && typeof input.url === "string" ? input.url : toStr(input);
        const method = toStr(o.method === undefined ? "GET" : o.method).toUpperCase();
        const headers = Array.from(new Headers(o.headers));
        let body;
        if (o.body !== undefined && o.body !== null) {
          if (method === "GET" || method === "HEAD") throw new TypeError("fetch: a " + method + " request cannot have a body");
          body = typeof o.body === "string" ? host.encode(o.body) : bytesOf(o.body);
          if (typeof o.body === "string" && !headers.some((h) => h[0] === "content-type")) headers.push(["content-type", "text/plain;charset=UTF-8"]);
        }
        const req = host.fetch(url, method, jsonStringify(headers), body);
        requests.set(req, { resolve, reject });
      });
    };
    hide(G, "fetch", fetch);
    hide(G, "Headers", Headers);
    hide(G, "Response", Response);
    makeResponse = (meta, body) => new Response(meta, body);
  }
  const fetchDone = (req, meta, body) => {
    const r = requests.get(req);
    if (!r) return;
    requests.delete(req);
    const m = jsonParse(meta);
    if (m.error) {
      const e = m.error.name === "RangeError" ? new RangeError(m.error.message) : new TypeError(m.error.message);
      if (m.error.code !== undefined) e.code = m.error.code; // NETWORK_DENIED: the grant refused it
      r.reject(e);
    } else r.resolve(makeResponse(m, body));
  };

  return { show, describe, fireTimer, fetchDone, moduleSource, clearTimers: () => { timers.clear(); requests.clear(); } };
}
