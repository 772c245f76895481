// The HTTP API in-process (the Hono app's request(), no socket: serve-cli, python-client and the
// openapi client test cover the real server): auth, isolation between keys,
// runs and streaming, files, limits and quotas, error bodies, idle expiry, capacity, OpenAPI,
// commands on a nano sandbox (501, streamed or not; the heavy tier's commands are in server-heavy.test.ts).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { z } from "zod";
import { createServer, KeyRing, loadKeys, startServer, type AgentboxServer } from "../../src/server/index.js";
import { commandRequest, createSandboxRequest } from "../../src/server/schemas.js";
import { isAlive, waitGone } from "../helpers.js";
import { childPids } from "../server-helpers.js";

const KEY_A = "key-a-0123456789abcdef";
const KEY_B = "key-b-0123456789abcdef";

interface Call {
  key?: string | null;
  json?: unknown;
  body?: string | Uint8Array;
  headers?: Record<string, string>;
}

function client(server: () => AgentboxServer) {
  return async (method: string, path: string, c: Call = {}) => {
    const headers: Record<string, string> = { ...c.headers };
    const key = c.key === undefined ? KEY_A : c.key;
    if (key !== null) headers.authorization = `Bearer ${key}`;
    let body: string | Uint8Array | undefined = c.body;
    if (c.json !== undefined) {
      body = JSON.stringify(c.json);
      headers["content-type"] = "application/json";
    }
    const res = await server().app.request(path, { method, headers, ...(body !== undefined ? { body } : {}) });
    const type = res.headers.get("content-type") ?? "";
    const raw = new Uint8Array(await res.arrayBuffer());
    const text = new TextDecoder().decode(raw);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const json: any = type.includes("json") && text ? JSON.parse(text) : undefined;
    return { status: res.status, json, raw, text, headers: res.headers };
  };
}

describe("HTTP API", () => {
  let srv: AgentboxServer;
  const api = client(() => srv);

  before(async () => {
    const keys = KeyRing.fromEntries([
      { name: "alice", key: KEY_A, maxSandboxes: 3, maxMemoryMb: 256, maxRunMs: 20_000 },
      { name: "bob", key: KEY_B, maxSandboxes: 1 },
    ]);
    srv = await createServer({ keys, poolSize: 1, maxJsonBytes: 64 * 1024, maxUploadBytes: 1024 * 1024, log: () => undefined });
  });
  after(async () => {
    await srv.close();
  });

  it("healthz and openapi.json need no key; everything else does (401 with a JSON body)", async () => {
    assert.equal((await api("GET", "/healthz", { key: null })).json.status, "ok");
    assert.equal((await api("GET", "/openapi.json", { key: null })).json.openapi, "3.1.0");
    const none = await api("GET", "/sandboxes", { key: null });
    assert.equal(none.status, 401);
    assert.equal(none.json.error.code, "UNAUTHORIZED");
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    const wrong = await api("GET", "/sandboxes", { key: "key-a-0123456789abcdeX" });
    assert.equal(wrong.status, 401);
    assert.match(wrong.json.error.message, /unknown API key/);
    assert.equal((await api("GET", "/sandboxes", { headers: { authorization: `Basic ${KEY_A}` }, key: null })).status, 401);
    assert.equal((await api("GET", "/metrics", { key: null })).status, 401);
  });

  it("create → run (REPL state) → get → list → delete; the worker is gone after delete", async () => {
    const before = new Set(childPids());
    const c = await api("POST", "/sandboxes", { json: { seed: 5, limits: { memoryMb: 128 } } });
    assert.equal(c.status, 201, c.text);
    const id: string = c.json.id;
    assert.match(id, /^sb_[0-9a-f]{24}$/);
    assert.equal(c.json.seed, 5);
    assert.equal(c.json.limits.memoryMb, 128);
    assert.equal(c.json.status, "running");
    const r1 = await api("POST", `/sandboxes/${id}/run`, { json: { code: "x = 41\nprint('hi')" } });
    assert.equal(r1.status, 200);
    assert.equal(r1.json.stdout, "hi\n");
    const r2 = await api("POST", `/sandboxes/${id}/run`, { json: { code: "x + 1" } });
    assert.equal(r2.json.value, "42");
    assert.equal(r2.json.seed, 5);
    const boom = await api("POST", `/sandboxes/${id}/run`, { json: { code: "raise ValueError('nope')" } });
    assert.equal(boom.status, 200);
    assert.equal(boom.json.exitCode, 1);
    assert.equal(boom.json.error.name, "ValueError");
    assert.equal((await api("GET", `/sandboxes/${id}`)).json.id, id);
    assert.deepEqual((await api("GET", "/sandboxes")).json.sandboxes.map((s: { id: string }) => s.id), [id]);
    const mine = childPids().filter((p) => !before.has(p));
    assert.equal((await api("DELETE", `/sandboxes/${id}`)).status, 204);
    assert.equal((await api("GET", `/sandboxes/${id}`)).status, 404);
    // The sandbox's worker (whichever of the new children it was) is gone; at most the refilled pool worker lives.
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(mine.filter(isAlive).length <= 1, `left alive: ${mine.filter(isAlive).join(",")}`);
  });

  it("one key cannot see or touch another key's sandbox: 404, not 403", async () => {
    const a = (await api("POST", "/sandboxes", { json: {} })).json.id as string;
    try {
      for (const [method, path, json] of [
        ["GET", `/sandboxes/${a}`],
        ["POST", `/sandboxes/${a}/run`, { code: "1" }],
        ["POST", `/sandboxes/${a}/keepalive`, {}],
        ["GET", `/sandboxes/${a}/files/list?path=/`],
        ["DELETE", `/sandboxes/${a}`],
      ] as const) {
        const r = await api(method, path, { key: KEY_B, ...(json ? { json } : {}) });
        assert.equal(r.status, 404, `${method} ${path}`);
        assert.equal(r.json.error.code, "NOT_FOUND");
      }
      assert.deepEqual((await api("GET", "/sandboxes", { key: KEY_B })).json.sandboxes, []);
      assert.equal((await api("GET", `/sandboxes/${a}`)).status, 200); // still alive for its owner
    } finally {
      await api("DELETE", `/sandboxes/${a}`);
    }
  });

  it("streams stdout/stderr as Server-Sent Events as they happen, then the result", async () => {
    const id = (await api("POST", "/sandboxes", { json: { clock: "real" } })).json.id as string;
    try {
      const res = await srv.app.request(`/sandboxes/${id}/run/stream`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY_A}`, "content-type": "application/json" },
        // The worker sends output when a write finds its buffer older than 20 ms, so the print
        // after the first sleep releases "first"; the run then sleeps again before it ends.
        body: JSON.stringify({ code: "import sys, time\nprint('first')\ntime.sleep(0.3)\nprint('err', file=sys.stderr)\ntime.sleep(0.6)\nprint('last')\n6 * 7" }),
      });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
      const events: { event: string; data: unknown; at: number }[] = [];
      const t0 = performance.now();
      let buf = "";
      const dec = new TextDecoder();
      for await (const chunk of res.body!) {
        buf += dec.decode(chunk as Uint8Array, { stream: true });
        let i: number;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
          const data = JSON.parse(/^data: (.*)$/m.exec(block)![1]!) as unknown;
          events.push({ event, data, at: performance.now() - t0 });
        }
      }
      const kinds = events.map((e) => e.event);
      assert.equal(kinds.at(-1), "result");
      assert.deepEqual(kinds.slice(0, -1).sort(), ["stderr", "stdout", "stdout"]);
      assert.equal(events[0]!.data, "first\n");
      const result = events.at(-1)!.data as { value: string; stdout: string };
      assert.equal(result.value, "42");
      assert.equal(result.stdout, "first\nlast\n");
      // The first chunk arrived while the guest was still sleeping, not with the result.
      assert.ok(events.at(-1)!.at - events[0]!.at > 400, `first chunk at ${events[0]!.at} ms, result at ${events.at(-1)!.at} ms`);
    } finally {
      await api("DELETE", `/sandboxes/${id}`);
    }
  });

  it("a client that drops a stream interrupts its run; the sandbox stays usable", async () => {
    const id = (await api("POST", "/sandboxes", { json: {} })).json.id as string;
    try {
      const ac = new AbortController();
      const res = await srv.app.request(`/sandboxes/${id}/run/stream`, { method: "POST", headers: { authorization: `Bearer ${KEY_A}` }, body: JSON.stringify({ code: "while True: pass" }), signal: ac.signal });
      assert.equal(res.status, 200);
      // Hanging up, in-process: the request's signal fires and the client stops reading.
      const reader = res.body!.getReader();
      setTimeout(() => {
        ac.abort();
        void reader.cancel().catch(() => undefined);
      }, 200);
      try {
        while (!(await reader.read()).done);
      } catch {
        // cancelled
      }
      const t0 = performance.now();
      const next = await api("POST", `/sandboxes/${id}/run`, { json: { code: "1 + 1" } });
      assert.equal(next.json.value, "2", JSON.stringify(next.json));
      assert.ok(performance.now() - t0 < 5000, "the dropped run was interrupted, not left to its 20 s timeout");
    } finally {
      await api("DELETE", `/sandboxes/${id}`);
    }
  });

  it("files: binary-safe upload/download, list, exists, mkdir, delete; traversal and missing files are 4xx", async () => {
    const id = (await api("POST", "/sandboxes", { json: {} })).json.id as string;
    try {
      const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
      assert.equal((await api("PUT", `/sandboxes/${id}/files?path=/data/all.bin`, { body: bytes })).status, 204);
      const back = await api("GET", `/sandboxes/${id}/files?path=/data/all.bin`);
      assert.equal(back.headers.get("content-type"), "application/octet-stream");
      assert.deepEqual(back.raw, bytes);
      const r = await api("POST", `/sandboxes/${id}/run`, { json: { code: "list(open('/data/all.bin','rb').read()) == list(range(256))" } });
      assert.equal(r.json.value, "True");
      assert.equal((await api("POST", `/sandboxes/${id}/files/mkdir?path=/data/sub/deeper`)).status, 204);
      const ls = await api("GET", `/sandboxes/${id}/files/list?path=/data`);
      assert.deepEqual(ls.json.entries.map((e: { name: string; type: string }) => [e.name, e.type]), [["all.bin", "file"], ["sub", "dir"]]);
      assert.equal((await api("GET", `/sandboxes/${id}/files/exists?path=/data/all.bin`)).json.exists, true);
      assert.equal((await api("POST", `/sandboxes/${id}/files/mkdir?path=/data/sub`)).status, 204, "mkdir -p over a directory");
      const overFile = await api("POST", `/sandboxes/${id}/files/mkdir?path=/data/all.bin`);
      assert.equal(overFile.status, 409);
      assert.equal(overFile.json.error.code, "FS_ERROR");
      assert.equal(overFile.json.error.errno, "EEXIST");
      assert.equal((await api("DELETE", `/sandboxes/${id}/files?path=/data/all.bin`)).status, 204);
      assert.equal((await api("GET", `/sandboxes/${id}/files/exists?path=/data/all.bin`)).json.exists, false);
      const missing = await api("GET", `/sandboxes/${id}/files?path=/data/all.bin`);
      assert.equal(missing.status, 404);
      assert.equal(missing.json.error.code, "FS_ERROR");
      assert.equal(missing.json.error.errno, "ENOENT");
      for (const p of ["/../etc/passwd", "/data/../../x", "relative/path", "%00"]) {
        const t = await api("GET", `/sandboxes/${id}/files?path=${encodeURIComponent(p)}`);
        assert.equal(t.status, 400, p);
        assert.equal(t.json.error.code, "INVALID_OPTIONS");
        assert.equal(t.json.error.issues[0].path, "path");
      }
      assert.equal((await api("GET", `/sandboxes/${id}/files`)).status, 400); // no ?path=
      const big = await api("PUT", `/sandboxes/${id}/files?path=/big`, { body: new Uint8Array(1024 * 1024 + 1) });
      assert.equal(big.status, 413);
      assert.equal(big.json.error.code, "BODY_TOO_LARGE");
    } finally {
      await api("DELETE", `/sandboxes/${id}`);
    }
  });

  it("network grants: only entries the operator allowed (--allow-net), compared after parsing", async () => {
    const own = await createServer({ keys: KeyRing.none(), poolSize: 0, netAllow: ["127.0.0.1:9", "https://api.example.com"], log: () => undefined });
    try {
      const post = (json: unknown) =>
        Promise.resolve(own.app.request("/sandboxes", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(json) })).then(async (r) => ({ status: r.status, json: (await r.json()) as { id?: string; error?: { message: string } } }));
      const ok = await post({ language: "javascript", network: { allow: ["127.0.0.1:9"] } });
      assert.equal(ok.status, 201, JSON.stringify(ok.json));
      await own.app.request(`/sandboxes/${ok.json.id}`, { method: "DELETE" });
      const other = await post({ language: "javascript", network: { allow: ["https://api.example.com", "evil.example.net"] } });
      assert.equal(other.status, 400);
      assert.match(other.json.error!.message, /network\.allow\.1.*evil\.example\.net.*--allow-net/);
      const widened = await post({ language: "javascript", network: { allow: ["api.example.com"] } }); // http too: wider than allowed
      assert.equal(widened.status, 400);
    } finally {
      await own.close();
    }
    await assert.rejects(createServer({ keys: KeyRing.none(), netAllow: ["http://user@host/"], log: () => undefined }), /--allow-net/);
  });

  it("per-key network grants: a key's allowNet replaces --allow-net for it; deny entries are the client's", async () => {
    const keys = KeyRing.fromEntries([
      { name: "carol", key: "key-carol-0123456789", allowNet: ["*.corp.test", "127.0.0.1:9"] },
      { name: "dave", key: "key-dave-01234567890", allowNet: [] },
      { name: "erin", key: "key-erin-01234567890" },
    ]);
    const own = await createServer({ keys, poolSize: 0, netAllow: ["https://api.example.com"], log: () => undefined });
    try {
      const post = async (key: string, json: unknown) => {
        const r = await own.app.request("/sandboxes", { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${key}` }, body: JSON.stringify(json) });
        const body = (await r.json()) as { id?: string; error?: { message: string; issues?: { path: string; message: string }[] } };
        if (body.id) await own.app.request(`/sandboxes/${body.id}`, { method: "DELETE", headers: { authorization: `Bearer ${key}` } });
        return { ...body, status: r.status };
      };
      const js = (network: unknown) => ({ language: "javascript", network });
      // carol: her own list, entries within it (a name under "*.corp.test"), with deny entries of her choosing.
      assert.equal((await post("key-carol-0123456789", js({ allow: ["api.corp.test", "*.corp.test", "127.0.0.1:9"], deny: ["secret.corp.test", "10.0.0.0"] }))).status, 201);
      const notHers = await post("key-carol-0123456789", js({ allow: ["127.0.0.1:9", "https://api.example.com"] }));
      assert.equal(notHers.status, 400);
      assert.deepEqual(notHers.error!.issues!.map((i) => i.path), ["network.allow.1"]);
      assert.match(notHers.error!.message, /network\.allow\.1: "https:\/\/api\.example\.com" is not within the hosts API key "carol"'s allowNet grants \(\*\.corp\.test, 127\.0\.0\.1:9\)/);
      assert.equal((await post("key-carol-0123456789", js({ allow: ["corp.test"] }))).status, 400, "the apex is not under *.corp.test");
      const badDeny = await post("key-carol-0123456789", js({ allow: ["api.corp.test"], deny: ["api.corp.test", "http://x/y"] }));
      assert.equal(badDeny.status, 400);
      assert.deepEqual(badDeny.error!.issues!.map((i) => i.path), ["network.deny.1"]);
      // dave: allowNet [] takes the server's grant away from him.
      const none = await post("key-dave-01234567890", js({ allow: ["https://api.example.com"] }));
      assert.equal(none.status, 400);
      assert.deepEqual(none.error!.issues!.map((i) => i.path), ["network"]);
      assert.match(none.error!.message, /API key "dave" is granted no network access \(its allowNet is empty\)/);
      // erin: no allowNet, so the server's --allow-net list.
      assert.equal((await post("key-erin-01234567890", js({ allow: ["https://api.example.com"] }))).status, 201);
      assert.match((await post("key-erin-01234567890", js({ allow: ["x.corp.test"] }))).error!.message, /network\.allow\.0: "x\.corp\.test" is not within the hosts this server's --allow-net grants/);
    } finally {
      await own.close();
    }
    assert.throws(() => KeyRing.fromEntries([{ name: "x", key: "key-x-0123456789abc", allowNet: ["ok.test", "http://user@host/"] }]), /allowNet/);
    assert.throws(() => loadKeys(undefined, { AGENTBOX_API_KEYS: JSON.stringify({ keys: [{ name: "x", key: "key-x-0123456789abc", allowNet: ["*.com"] }] }) }), /keys\.0\.allowNet\.0: /);
  });

  it("bad input gets a 4xx JSON error naming the problem", async () => {
    const bad = async (status: number, code: string, method: string, path: string, c: Call, match?: RegExp) => {
      const r = await api(method, path, c);
      assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
      assert.equal(r.json.error.code, code);
      if (match) assert.match(r.json.error.message, match);
      return r;
    };
    await bad(400, "INVALID_JSON", "POST", "/sandboxes", { body: "{nope", headers: { "content-type": "application/json" } }, /not valid JSON/);
    await bad(400, "INVALID_JSON", "POST", "/sandboxes", { json: [1, 2] }, /JSON object/);
    const types = await bad(400, "INVALID_OPTIONS", "POST", "/sandboxes", { json: { limits: { memoryMb: "lots" }, tier: "huge", extra: 1 } });
    assert.deepEqual(types.json.error.issues.map((i: { path: string }) => i.path).sort(), ["extra", "limits.memoryMb", "tier"]);
    await bad(400, "INVALID_OPTIONS", "POST", "/sandboxes", { json: { limits: { memoryMb: 512 } } }, /limits\.memoryMb: 512 is over this API key's quota of 256 \(maxMemoryMb\)/);
    await bad(400, "INVALID_OPTIONS", "POST", "/sandboxes", { json: { limits: { timeoutMs: 60_000 } } }, /maxRunMs/);
    await bad(400, "INVALID_OPTIONS", "POST", "/sandboxes", { json: { tier: "heavy", limits: { cpus: 4 } } }, /limits\.cpus: 4 is over this API key's quota of 2 \(maxCpus\)/);
    await bad(400, "INVALID_OPTIONS", "POST", "/sandboxes", { json: { tier: "heavy", limits: { diskMb: 2048 } } }, /maxDiskMb/);
    await bad(400, "INVALID_OPTIONS", "POST", "/sandboxes", { json: { mounts: [{ hostPath: "/etc", guestPath: "/etc2" }] } }, /allows no mounts/);
    // A client cannot grant itself network access: that is the operator's (--allow-net).
    await bad(400, "INVALID_OPTIONS", "POST", "/sandboxes", { json: { language: "javascript", network: { allow: ["example.com"] } } }, /grants no network access/);
    await bad(413, "BODY_TOO_LARGE", "POST", "/sandboxes", { json: { env: { X: "y".repeat(70 * 1024) } } });
    await bad(404, "NOT_FOUND", "GET", "/sandboxes/sb_nope", {});
    await bad(404, "NOT_FOUND", "POST", "/sandboxes/sb_nope/run", { json: { code: "1" } });
    await bad(404, "NOT_FOUND", "GET", "/no/such/route", {}, /no route GET \/no\/such\/route/);
    const id = (await api("POST", "/sandboxes", { json: {} })).json.id as string;
    try {
      await bad(400, "INVALID_OPTIONS", "POST", `/sandboxes/${id}/run`, { json: { code: 42 } }, /code/);
      await bad(400, "INVALID_OPTIONS", "POST", `/sandboxes/${id}/run`, { json: {} }, /code/);
      await bad(400, "INVALID_OPTIONS", "POST", `/sandboxes/${id}/run`, { json: { code: "1", timeoutMs: 25_000 } }, /timeoutMs: 25000 is over this API key's quota of 20000/);
      await bad(400, "INVALID_OPTIONS", "POST", `/sandboxes/${id}/keepalive`, { json: { idleTimeoutMs: -1 } }, /idleTimeoutMs/);
      assert.equal((await api("POST", `/sandboxes/${id}/run`, { json: { code: "'still fine'" } })).json.value, "'still fine'");
    } finally {
      await api("DELETE", `/sandboxes/${id}`);
    }
    assert.equal((await api("GET", "/healthz")).status, 200); // the server survived all of it
  });

  it("limits: a timeout the sandbox survives is a result; one that kills the worker is 422, then 410", async () => {
    const id = (await api("POST", "/sandboxes", { json: { limits: { timeoutMs: 300, graceMs: 100 } } })).json.id as string;
    try {
      const soft = await api("POST", `/sandboxes/${id}/run`, { json: { code: "while True: pass" } });
      assert.equal(soft.status, 200);
      assert.equal(soft.json.limitHit, "timeoutMs");
      const out = await api("POST", `/sandboxes/${id}/run`, { json: { code: "print('x' * 2_000_000)" } });
      assert.equal(out.json.limitHit, "outputBytes");
      const hard = await api("POST", `/sandboxes/${id}/run`, { json: { code: "print('before')\nwhile True:\n    try:\n        while True: pass\n    except BaseException:\n        pass" } });
      assert.equal(hard.status, 422, hard.text);
      assert.deepEqual(hard.json.error.result, { stdout: "before\n", stderr: "", exitCode: 137, limitHit: "timeoutMs" }); // the output so far
      assert.equal(hard.json.error.code, "TIMEOUT");
      assert.equal(hard.json.error.limit, "timeoutMs");
      assert.equal(hard.json.error.value, 300);
      assert.equal(hard.json.error.sandboxClosed, true);
      const gone = await api("POST", `/sandboxes/${id}/run`, { json: { code: "1" } });
      assert.equal(gone.status, 410);
      assert.equal(gone.json.error.code, "SANDBOX_CLOSED");
      assert.equal((await api("GET", `/sandboxes/${id}`)).json.status, "closed");
      const m = (await api("GET", "/metrics")).text;
      assert.match(m, /agentbox_run_limit_failures_total\{limit="timeoutMs"\} [1-9]/);
      assert.match(m, /agentbox_run_limit_failures_total\{limit="outputBytes"\} [1-9]/);
      assert.match(m, /agentbox_runs_total\{outcome="limit"\} [1-9]/);
      assert.match(m, /agentbox_sandbox_start_seconds_count [1-9]/);
      assert.match(m, /agentbox_sandboxes_live 1/);
    } finally {
      await api("DELETE", `/sandboxes/${id}`);
    }
  });

  it("commands: a nano sandbox answers 501 TIER_UNAVAILABLE naming the heavy tier; bad bodies are 400", async () => {
    const id = (await api("POST", "/sandboxes", { json: {} })).json.id as string;
    try {
      for (const path of [`/sandboxes/${id}/commands`, `/sandboxes/${id}/commands/stream`]) {
        const r = await api("POST", path, { json: { cmd: "true" } });
        // The stream route refuses before streaming, with the same status as the plain one.
        assert.equal(r.status, 501, r.text);
        assert.equal(r.json.error.code, "TIER_UNAVAILABLE");
        assert.match(r.json.error.message, /tier: "heavy"/);
      }
      for (const [json, field] of [[{}, "cmd"], [{ cmd: [] }, "cmd"], [{ cmd: 42 }, "cmd"], [{ cmd: "a\0b" }, "cmd"], [{ cmd: "true", stdin: "a", stdinBase64: "YQ==" }, "stdinBase64"], [{ cmd: "true", cwd: "rel" }, "cwd"], [{ cmd: "true", extra: 1 }, ""]] as const) {
        const r = await api("POST", `/sandboxes/${id}/commands`, { json });
        assert.equal(r.status, 400, JSON.stringify(json));
        assert.equal(r.json.error.code, "INVALID_OPTIONS");
        assert.ok(r.json.error.issues.some((i: { path: string }) => i.path === field), `${JSON.stringify(json)}: ${r.text}`);
      }
      const over = await api("POST", `/sandboxes/${id}/commands`, { json: { cmd: "true", timeoutMs: 25_000 } });
      assert.match(over.json.error.message, /maxRunMs/);
      assert.equal((await api("POST", `/sandboxes/${id}/commands`, { key: KEY_B, json: { cmd: "true" } })).status, 404);
    } finally {
      await api("DELETE", `/sandboxes/${id}`);
    }
  });

  it("per-key quota: past maxSandboxes a create is 429 QUOTA_EXCEEDED; deleting frees it", async () => {
    const first = await api("POST", "/sandboxes", { key: KEY_B, json: {} });
    assert.equal(first.status, 201);
    const second = await api("POST", "/sandboxes", { key: KEY_B, json: {} });
    assert.equal(second.status, 429);
    assert.equal(second.json.error.code, "QUOTA_EXCEEDED");
    assert.match(second.json.error.message, /maxSandboxes/);
    await api("DELETE", `/sandboxes/${first.json.id}`, { key: KEY_B });
    const third = await api("POST", "/sandboxes", { key: KEY_B, json: {} });
    assert.equal(third.status, 201);
    await api("DELETE", `/sandboxes/${third.json.id}`, { key: KEY_B });
  });

  it("idle sandboxes with idleAction kill are deleted after idleTimeoutMs; keepalive restarts the timer", async () => {
    const idle = (await api("POST", "/sandboxes", { json: { idleTimeoutMs: 1000, idleAction: "kill" } })).json.id as string;
    const kept = (await api("POST", "/sandboxes", { json: { idleTimeoutMs: 1000, idleAction: "kill" } })).json.id as string;
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const k = await api("POST", `/sandboxes/${kept}/keepalive`);
      assert.equal(k.status, 200);
    }
    assert.equal((await api("GET", `/sandboxes/${idle}`)).status, 404);
    const info = await api("POST", `/sandboxes/${kept}/keepalive`, { json: { idleTimeoutMs: 60_000 } });
    assert.equal(info.json.idleTimeoutMs, 60_000);
    assert.equal((await api("POST", `/sandboxes/${kept}/run`, { json: { code: "1" } })).json.value, "1");
    assert.match((await api("GET", "/metrics")).text, /agentbox_sandboxes_expired_total 1/);
    await api("DELETE", `/sandboxes/${kept}`);
  });

  it("the OpenAPI document is 3.1, every $ref resolves, and request schemas are the validating ones", async () => {
    const doc = (await api("GET", "/openapi.json", { key: null })).json;
    assert.equal(doc.openapi, "3.1.0");
    const refs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object") {
        for (const [k, x] of Object.entries(v)) {
          if (k === "$ref" && typeof x === "string") refs.push(x);
          else walk(x);
        }
      }
    };
    walk(doc);
    assert.ok(refs.length > 10);
    for (const r of refs) {
      const [, , , name] = r.split("/");
      assert.ok(r.startsWith("#/components/schemas/") && doc.components.schemas[name!], `dangling ${r}`);
    }
    for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, { responses?: object }>>)) {
      assert.ok(p.startsWith("/"));
      for (const [m, op] of Object.entries(ops)) if (m !== "parameters") assert.ok(op.responses && Object.keys(op.responses).length > 0, `${m} ${p}`);
    }
    // Request bodies sit inline in their operation, from the parsing schema's input side.
    const bodyOf = (p: string) => doc.paths[p].post.requestBody.content["application/json"].schema;
    const { $schema: _s, ...expected } = z.toJSONSchema(createSandboxRequest, { io: "input", target: "draft-2020-12" });
    assert.deepEqual(bodyOf("/sandboxes"), JSON.parse(JSON.stringify(expected)));
    // One body schema per tier; every create option has a default (nano's tier too).
    const perTier = bodyOf("/sandboxes").anyOf as { properties: { tier: { const: string } }; required?: string[] }[];
    assert.deepEqual(perTier.map((t) => t.properties.tier.const), ["nano", "heavy", "auto"]);
    assert.deepEqual(perTier.map((t) => t.required), [undefined, ["tier"], ["tier"]]);
    assert.ok(doc.paths["/sandboxes/{id}/commands"].post && doc.paths["/sandboxes/{id}/commands/stream"].post);
    const { $schema: _c, ...cmd } = z.toJSONSchema(commandRequest, { io: "input", target: "draft-2020-12" });
    assert.deepEqual(bodyOf("/sandboxes/{id}/commands"), JSON.parse(JSON.stringify(cmd)));
    assert.deepEqual(Object.keys(doc.components.schemas.CommandResult.properties).sort(), ["durationMs", "exitCode", "limitHit", "signal", "stderr", "stdout"]);
  });
});

describe("HTTP API: capacity and start-up rules", () => {
  it("past the global cap a create waits for a slot, then is refused with 429 CAPACITY", async () => {
    const srv = await createServer({ maxSandboxes: 1, queueTimeoutMs: 400, poolSize: 0, log: () => undefined });
    const api = client(() => srv);
    try {
      const a = await api("POST", "/sandboxes", { key: null, json: {} });
      assert.equal(a.status, 201);
      const t0 = performance.now();
      const b = await api("POST", "/sandboxes", { key: null, json: {} });
      assert.equal(b.status, 429);
      assert.equal(b.json.error.code, "CAPACITY");
      assert.equal(b.headers.get("retry-after"), "1");
      assert.ok(performance.now() - t0 >= 350);
      // A waiting create gets the slot as soon as one frees.
      const waiting = api("POST", "/sandboxes", { key: null, json: {} });
      await new Promise((r) => setTimeout(r, 100));
      await api("DELETE", `/sandboxes/${a.json.id}`, { key: null });
      const c = await waiting;
      assert.equal(c.status, 201);
    } finally {
      await srv.close();
    }
  });

  it("refuses to start on a non-loopback address without API keys", async () => {
    await assert.rejects(startServer({ host: "0.0.0.0", port: 0 }), /refusing to listen on 0\.0\.0\.0 without API keys/);
  });

  it("close() kills every sandbox it owns", async () => {
    const before = new Set(childPids());
    const srv = await createServer({ poolSize: 0, log: () => undefined });
    const api = client(() => srv);
    await api("POST", "/sandboxes", { key: null, json: {} });
    await api("POST", "/sandboxes", { key: null, json: {} });
    const mine = childPids().filter((p) => !before.has(p));
    assert.equal(mine.length, 2);
    await srv.close();
    for (const p of mine) await waitGone(p);
  });
});
