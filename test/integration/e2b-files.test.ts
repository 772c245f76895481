// E2B's filesystem API through the real `e2b` SDK against agentbox serve: envd's /files upload and
// download (multipart, octet-stream, signed URLs) and its filesystem.Filesystem Connect service
// (Stat, MakeDir, Move, ListDir, Remove, WatchDir) on a nano sandbox, the key ones on a heavy one.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { FileNotFoundError, NotFoundError, Sandbox, type FilesystemEvent } from "e2b";
import { startE2bServer, type E2bServer } from "../e2b-helpers.js";
import { ensureImage, skipHeavy } from "../heavy.js";

const CAP = 1024 * 1024;

async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

/** The cases both tiers run. */
function shared(get: () => Sandbox) {
  it("writes and reads text and bytes (all 256 byte values), blob and stream", async () => {
    const sbx = get();
    const info = await sbx.files.write("/home/user/hello.txt", "héllo\nworld");
    assert.equal(info.path, "/home/user/hello.txt");
    assert.equal(info.name, "hello.txt");
    assert.equal(info.type, "file");
    assert.equal(await sbx.files.read("/home/user/hello.txt"), "héllo\nworld");

    const all = new Uint8Array(256).map((_, i) => i);
    // The SDK types binary data as ArrayBuffer (or Blob/stream); it reads back as a Uint8Array.
    await sbx.files.write("/home/user/bytes.bin", all.buffer);
    const back = await sbx.files.read("/home/user/bytes.bin", { format: "bytes" });
    assert.ok(back instanceof Uint8Array);
    assert.deepEqual([...back], [...all]);

    const blob = await sbx.files.read("/home/user/bytes.bin", { format: "blob" });
    assert.deepEqual([...new Uint8Array(await blob.arrayBuffer())], [...all]);

    const stream = await sbx.files.read("/home/user/hello.txt", { format: "stream" });
    assert.equal(await new Response(stream).text(), "héllo\nworld");

    // A stream is uploaded as application/octet-stream.
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("streamed "));
        c.enqueue(new TextEncoder().encode("upload"));
        c.close();
      },
    });
    const s = await sbx.files.write("/home/user/streamed.txt", body);
    assert.equal(s.path, "/home/user/streamed.txt");
    assert.equal(await sbx.files.read("/home/user/streamed.txt"), "streamed upload");

    // Relative paths are the user's home's; an empty file reads as "".
    await sbx.files.write("relative.txt", "");
    assert.equal(await sbx.files.read("/home/user/relative.txt"), "");
  });

  it("writes many files at once, lists with depth, stats, checks existence", async () => {
    const sbx = get();
    const written = await sbx.files.write([
      { path: "/home/user/many/a.txt", data: "A" },
      { path: "/home/user/many/sub/b.txt", data: new Uint8Array([1, 2, 3]).buffer },
      { path: "/home/user/many/sub/deeper/c.txt", data: new Blob(["CCCC"]) },
    ]);
    assert.deepEqual(
      written.map((w) => w.path),
      ["/home/user/many/a.txt", "/home/user/many/sub/b.txt", "/home/user/many/sub/deeper/c.txt"],
    );
    assert.equal(await sbx.files.read("/home/user/many/sub/deeper/c.txt"), "CCCC");

    const one = await sbx.files.list("/home/user/many");
    assert.deepEqual(
      one.map((e) => [e.name, e.type, e.path]),
      [
        ["a.txt", "file", "/home/user/many/a.txt"],
        ["sub", "dir", "/home/user/many/sub"],
      ],
    );
    assert.equal(one[0]!.size, 1);
    const two = await sbx.files.list("/home/user/many", { depth: 2 });
    assert.deepEqual(
      two.map((e) => e.path),
      ["/home/user/many/a.txt", "/home/user/many/sub", "/home/user/many/sub/b.txt", "/home/user/many/sub/deeper"],
    );
    const three = await sbx.files.list("/home/user/many", { depth: 3 });
    assert.ok(three.some((e) => e.path === "/home/user/many/sub/deeper/c.txt"));

    const info = await sbx.files.getInfo("/home/user/many/sub/b.txt");
    assert.equal(info.type, "file");
    assert.equal(info.size, 3);
    assert.equal(info.name, "b.txt");
    assert.equal(info.permissions, "-rw-r--r--");
    const dir = await sbx.files.getInfo("/home/user/many/sub");
    assert.equal(dir.type, "dir");
    assert.equal(dir.permissions, "drwxr-xr-x");

    assert.equal(await sbx.files.exists("/home/user/many/a.txt"), true);
    assert.equal(await sbx.files.exists("/home/user/many/nope.txt"), false);
    await assert.rejects(sbx.files.getInfo("/home/user/many/nope.txt"), FileNotFoundError);
    await assert.rejects(sbx.files.list("/home/user/many/nope"), FileNotFoundError);
  });

  it("makes directories (true, then false), renames, removes", async () => {
    const sbx = get();
    assert.equal(await sbx.files.makeDir("/home/user/made/x/y"), true);
    assert.equal(await sbx.files.makeDir("/home/user/made/x/y"), false);
    assert.equal((await sbx.files.getInfo("/home/user/made/x/y")).type, "dir");

    await sbx.files.write("/home/user/made/x/y/f.txt", "moved content");
    const moved = await sbx.files.rename("/home/user/made/x/y/f.txt", "/home/user/made/g.txt");
    assert.equal(moved.path, "/home/user/made/g.txt");
    assert.equal(moved.type, "file");
    assert.equal(await sbx.files.read("/home/user/made/g.txt"), "moved content");
    assert.equal(await sbx.files.exists("/home/user/made/x/y/f.txt"), false);

    // A directory with what it holds.
    await sbx.files.write("/home/user/made/x/y/h.txt", "h");
    const dir = await sbx.files.rename("/home/user/made/x", "/home/user/made/z");
    assert.equal(dir.type, "dir");
    assert.equal(await sbx.files.read("/home/user/made/z/y/h.txt"), "h");
    assert.equal(await sbx.files.exists("/home/user/made/x"), false);
    await assert.rejects(sbx.files.rename("/home/user/made/none", "/home/user/made/none2"), FileNotFoundError);

    await sbx.files.remove("/home/user/made/g.txt");
    assert.equal(await sbx.files.exists("/home/user/made/g.txt"), false);
    await sbx.files.remove("/home/user/made/z");
    assert.equal(await sbx.files.exists("/home/user/made/z"), false);
    // As envd (os.RemoveAll): removing what is not there is not an error.
    await sbx.files.remove("/home/user/made/z");
  });

  it("a missing file's read is the SDK's FileNotFoundError; a directory's read is refused", async () => {
    const sbx = get();
    const err = await sbx.files.read("/home/user/does-not-exist.txt").then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof FileNotFoundError, String(err));
    assert.ok(err instanceof NotFoundError);
    await assert.rejects(sbx.files.read("/home/user"), /directory/);
    // Paths outside the guest-path rules are refused, not resolved.
    await assert.rejects(sbx.files.read("/home/user/../../etc/passwd"), /\.\./);
  });

  it("watchDir reports a file written after it started", async () => {
    const sbx = get();
    await sbx.files.makeDir("/home/user/watched");
    const events: FilesystemEvent[] = [];
    const handle = await sbx.files.watchDir("/home/user/watched", (e) => void events.push(e));
    try {
      await sbx.files.write("/home/user/watched/new.txt", "fresh");
      assert.ok(await waitUntil(() => events.some((e) => e.name === "new.txt" && e.type === "create"), 5000), JSON.stringify(events));
      await sbx.files.remove("/home/user/watched/new.txt");
      assert.ok(await waitUntil(() => events.some((e) => e.name === "new.txt" && e.type === "remove"), 5000), JSON.stringify(events));
    } finally {
      await handle.stop();
    }
    await assert.rejects(
      sbx.files.watchDir("/home/user/not-a-dir-here", () => undefined),
      FileNotFoundError,
    );
  });
}

describe("E2B files API (nano sandbox)", { timeout: 120_000 }, () => {
  let e2b: E2bServer;
  let sbx: Sandbox;
  before(async () => {
    e2b = await startE2bServer({ maxUploadBytes: CAP });
    sbx = await Sandbox.create("agentbox-python");
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await e2b?.close();
  });

  shared(() => sbx);

  it("refuses an upload over the server's cap with a clear error, and writes nothing", async () => {
    await assert.rejects(sbx.files.write("/home/user/big.bin", new ArrayBuffer(CAP + 10)), /over this server's limit of 1048576 bytes/);
    assert.equal(await sbx.files.exists("/home/user/big.bin"), false);
    // Just under it is fine.
    await sbx.files.write("/home/user/ok.bin", new Uint8Array(CAP - 1024).fill(7).buffer);
    assert.equal((await sbx.files.getInfo("/home/user/ok.bin")).size, CAP - 1024);
  });

  it("writes gzip-compressed uploads (octet-stream, Content-Encoding: gzip)", async () => {
    const text = "compressible ".repeat(1000);
    const info = await sbx.files.write("/home/user/gz.txt", text, { gzip: true });
    assert.equal(info.path, "/home/user/gz.txt");
    assert.equal(await sbx.files.read("/home/user/gz.txt", { gzip: true }), text);
  });

  it("caps watchers per sandbox and frees a slot when a watcher stops", async () => {
    await sbx.files.makeDir("/home/user/capped");
    const handles = [];
    for (let i = 0; i < 8; i++) handles.push(await sbx.files.watchDir("/home/user/capped", () => undefined));
    await assert.rejects(sbx.files.watchDir("/home/user/capped", () => undefined), /at most 8/);
    for (const h of handles) await h.stop();
    // The server sees the hang-ups and releases the slots.
    let again: Awaited<ReturnType<typeof sbx.files.watchDir>> | undefined;
    for (let i = 0; i < 40 && !again; i++) {
      again = await sbx.files.watchDir("/home/user/capped", () => undefined).catch(() => undefined);
      if (!again) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(again, "a watcher can be made again once the others stopped");
    await again.stop();
  });

  it("the polled watcher (CreateWatcher, GetWatcherEvents, RemoveWatcher) over Connect JSON", async () => {
    const token = (sbx as unknown as { envdAccessToken: string }).envdAccessToken;
    const call = async (method: string, body: unknown) => {
      const r = await fetch(`${e2b.env.E2B_SANDBOX_URL}/filesystem.Filesystem/${method}`, {
        method: "POST",
        headers: { "content-type": "application/json", "e2b-sandbox-id": sbx.sandboxId, "e2b-sandbox-port": "49983", "x-access-token": token },
        body: JSON.stringify(body),
      });
      return { status: r.status, body: (await r.json()) as Record<string, unknown> };
    };
    await sbx.files.makeDir("/home/user/polled");
    const created = await call("CreateWatcher", { path: "/home/user/polled", includeEntry: true });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const watcherId = created.body.watcherId as string;
    assert.match(watcherId, /^[0-9a-f-]{36}$/);
    await sbx.files.write("/home/user/polled/p.txt", "pp");
    let events: { name: string; type: string; entry?: { path: string; type: string; size: string } }[] = [];
    for (let i = 0; i < 50 && !events.some((e) => e.type === "EVENT_TYPE_CREATE"); i++) {
      await new Promise((r) => setTimeout(r, 100));
      events = events.concat(((await call("GetWatcherEvents", { watcherId })).body.events ?? []) as typeof events);
    }
    const create = events.find((e) => e.type === "EVENT_TYPE_CREATE");
    assert.ok(create, JSON.stringify(events));
    assert.equal(create.name, "p.txt");
    assert.deepEqual([create.entry?.path, create.entry?.type, create.entry?.size], ["/home/user/polled/p.txt", "FILE_TYPE_FILE", "2"]);
    assert.equal((await call("RemoveWatcher", { watcherId })).status, 200);
    const gone = await call("GetWatcherEvents", { watcherId });
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, "not_found");
    // Hostile input is refused, not crashed on.
    assert.equal((await call("Stat", { path: 42 })).body.code, "invalid_argument");
    assert.equal((await call("ListDir", { path: "/home/user", depth: "-1" })).body.code, "invalid_argument");
    assert.equal((await call("Move", { source: "/home/user/polled", destination: "/home/user/polled/inside" })).status >= 400, true);
  });

  it("watchDir recursive reports nested changes and a rename", async () => {
    await sbx.files.makeDir("/home/user/rw/inner");
    const events: FilesystemEvent[] = [];
    const handle = await sbx.files.watchDir("/home/user/rw", (e) => void events.push(e), { recursive: true });
    try {
      await sbx.files.write("/home/user/rw/inner/n.txt", "12345");
      assert.ok(await waitUntil(() => events.some((e) => e.name === "inner/n.txt" && e.type === "create"), 5000), JSON.stringify(events));
      await sbx.files.rename("/home/user/rw/inner/n.txt", "/home/user/rw/m.txt");
      assert.ok(await waitUntil(() => events.some((e) => e.name === "inner/n.txt" && e.type === "rename") && events.some((e) => e.name === "m.txt" && e.type === "create"), 5000), JSON.stringify(events));
      await sbx.files.write("/home/user/rw/m.txt", "longer content now");
      assert.ok(await waitUntil(() => events.some((e) => e.name === "m.txt" && e.type === "write"), 5000), JSON.stringify(events));
    } finally {
      await handle.stop();
    }
  });

  it("signed downloadUrl and uploadUrl work without the sandbox's headers; a tampered or expired one is refused", async () => {
    await sbx.files.write("/home/user/signed.txt", "signed bytes");
    const down = await sbx.downloadUrl("/home/user/signed.txt");
    assert.match(down, /[?&]signature=v1_/);
    const r = await fetch(down);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "signed bytes");

    const tampered = new URL(down);
    tampered.searchParams.set("path", "/home/user/hello.txt");
    assert.equal((await fetch(tampered)).status, 401);

    const up = await sbx.uploadUrl("/home/user/uploaded.txt", { useSignatureExpiration: 60 });
    assert.match(up, /signature_expiration=\d+/);
    const form = new FormData();
    form.append("file", new Blob(["via signed url"]), "uploaded.txt");
    const u = await fetch(up, { method: "POST", body: form });
    assert.equal(u.status, 200, await u.clone().text());
    const written = (await u.json()) as { path: string; name: string; type: string }[];
    assert.deepEqual(written, [{ name: "uploaded.txt", type: "file", path: "/home/user/uploaded.txt" }]);
    assert.equal(await sbx.files.read("/home/user/uploaded.txt"), "via signed url");
    // The read signature does not allow a write.
    assert.equal((await fetch(down, { method: "POST", body: form })).status, 401);

    const expired = new URL(await sbx.downloadUrl("/home/user/signed.txt", { useSignatureExpiration: 60 }));
    expired.searchParams.set("signature_expiration", String(Math.floor(Date.now() / 1000) - 10));
    assert.equal((await fetch(expired)).status, 401);
  });
});

describe("E2B files API (heavy sandbox)", { skip: skipHeavy, timeout: 300_000 }, () => {
  let e2b: E2bServer;
  let sbx: Sandbox;
  before(async () => {
    await ensureImage();
    e2b = await startE2bServer({ maxUploadBytes: CAP });
    sbx = await Sandbox.create("base");
  });
  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await e2b?.close();
  });

  shared(() => sbx);
});
