// Cluster mode for real: a 3-member etcd cluster and 3 `agentbox serve --cluster` processes on
// loopback, sharing one --state-dir, driven through the native API, the Python client and the E2B
// SDK. Creates spread over the nodes, every request is served through any node, a key's quota
// holds across nodes, a node killed with SIGKILL under load takes only its own sandboxes with it
// (410 within the lease time, no request hangs), a drained node's sandboxes resume on another,
// an etcd member's death changes nothing, and without etcd creates are refused (503) while the
// sandboxes already running keep answering.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox as E2bSandbox } from "@e2b/code-interpreter";
import { agentboxEnv } from "../helpers.js";
import { etcdUnavailableReason, startEtcd, startNode, until, type EtcdCluster, type Node } from "../cluster-helpers.js";
import { Etcd3 } from "etcd3";
import WebSocket from "ws";
import { ensureImage, skipHeavy } from "../heavy.js";
import { GUEST_APP } from "../ports.js";

const skip = etcdUnavailableReason();
if (skip) console.log(`# skipped: cluster tests: ${skip}`);

const KEY = "cluster-alice-key-0123456789";
const KEY2 = "cluster-bob-key-0123456789ab";
const KEY3 = "cluster-carol-key-0123456789";
const E2B_KEY = `e2b_${"a7".repeat(20)}`;
const KEYS = {
  keys: [
    { name: "alice", key: KEY, maxSandboxes: 5 },
    { name: "bob", key: KEY2, maxSandboxes: 2 },
    { name: "e2b-user", key: E2B_KEY, maxSandboxes: 4 },
    { name: "carol", key: KEY3, maxSandboxes: 3, maxSnapshots: 1 },
  ],
};
const LEASE_S = 3;
/** How long a gone node's running sandboxes answer 410 before the sweep removes their records (then 404). */
const RETENTION_S = 6;
const CLIENT_DIR = fileURLToPath(new URL("../../clients/python", import.meta.url));

interface Info {
  id: string;
  node?: string;
  status: string;
}

/** The keys under `prefix` in etcd, asked directly (what the catalog holds, not what a node says). */
async function etcdKeys(etcd: EtcdCluster, prefix: string): Promise<string[]> {
  const client = new Etcd3({ hosts: etcd.spec.replace(/^etcd:\/\//, "").split(",").map((h) => `http://${h}`) });
  try {
    return await client.getAll().prefix(prefix).keys();
  } finally {
    client.close();
  }
}

function api(node: Node, key = KEY) {
  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  return {
    req: (method: string, p: string, body?: unknown, timeoutMs = 30_000) =>
      fetch(`${node.url}${p}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(timeoutMs) }),
    json: async <T = unknown>(method: string, p: string, body?: unknown): Promise<T> => {
      const r = await fetch(`${node.url}${p}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.timeout(30_000) });
      const text = await r.text();
      assert.ok(r.ok, `${method} ${p} via ${node.id}: ${r.status} ${text}`);
      return (text ? JSON.parse(text) : undefined) as T;
    },
  };
}

describe("cluster: 3 etcd members, 3 agentbox nodes", { skip }, () => {
  let etcd: EtcdCluster;
  let nodes: Node[] = [];
  let stateDir: string;
  const by = (id: string) => nodes.find((n) => n.id === id)!;
  const nodeArgs = (id: string) => ["--lease-ttl", `${LEASE_S}s`, "--gone-retention", `${RETENTION_S}s`, "--state-dir", stateDir, "--pool", "0", ...(id === "c" ? ["--max-heavy", "0"] : [])];
  /** Bring back every node a test before this one killed (same id, same shared directory), so one failure does not fail the rest. */
  const restartDead = async () => {
    nodes = await Promise.all(nodes.map((n) => (n.proc.exitCode === null && n.proc.signalCode === null ? n : startNode(etcd.spec, n.id, nodeArgs(n.id), { AGENTBOX_API_KEYS: JSON.stringify(KEYS) }))));
  };

  before(async () => {
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-cluster-state-"));
    etcd = await startEtcd(3);
    const env = { AGENTBOX_API_KEYS: JSON.stringify(KEYS) };
    // Node c has no heavy tier: it takes nano sandboxes only.
    nodes = await Promise.all(["a", "b", "c"].map((id) => startNode(etcd.spec, id, nodeArgs(id), env)));
  });

  after(async () => {
    await Promise.all(nodes.map((n) => n.kill("SIGKILL")));
    await etcd?.close();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  it("every node sees the others (healthz), and creates spread over the nodes by room", async () => {
    for (const n of nodes) {
      // Nodes that joined at the same moment see each other once the watch delivers the others.
      const h = await until(
        async () => {
          const x = (await (await fetch(`${n.url}/healthz`)).json()) as { cluster: { node: string; store: string; nodes: string[] } };
          return x.cluster.nodes.length === 3 ? x : undefined;
        },
        10_000,
        `node ${n.id} to see all three`,
      );
      assert.deepEqual(h.cluster, { node: n.id, store: "ok", nodes: ["a", "b", "c"] });
    }
    // Created one by one through node a, each after the nodes published their counts.
    const made: Info[] = [];
    for (let i = 0; i < 3; i++) {
      made.push(await api(nodes[0]!).json<Info>("POST", "/sandboxes", { language: "python" }));
      await new Promise((r) => setTimeout(r, 1300));
    }
    assert.deepEqual(made.map((m) => m.node).sort(), ["a", "b", "c"], "one on each node");
    // Every sandbox answers through every node, with its state.
    for (const m of made) {
      await api(by(m.node!)).json("POST", `/sandboxes/${m.id}/run`, { code: `who = ${JSON.stringify(m.node)}` });
      for (const n of nodes) {
        const r = await api(n).json<{ value?: string }>("POST", `/sandboxes/${m.id}/run`, { code: "who" });
        assert.equal(r.value, `'${m.node}'`, `${m.id} through ${n.id}`);
      }
    }
    // The list is the same through any node: every node's sandboxes.
    for (const n of nodes) {
      const l = await api(n).json<{ sandboxes: Info[] }>("GET", "/sandboxes");
      assert.deepEqual(l.sandboxes.map((s) => s.id).sort(), made.map((m) => m.id).sort(), `list through ${n.id}`);
    }
    for (const m of made) assert.equal((await api(nodes[2]!).req("DELETE", `/sandboxes/${m.id}`)).status, 204);
    assert.deepEqual((await api(nodes[1]!).json<{ sandboxes: Info[] }>("GET", "/sandboxes")).sandboxes, []);
  });

  it("files, streams and another key's 404 through a node that does not hold the sandbox", async () => {
    const sb = await api(nodes[0]!).json<Info>("POST", "/sandboxes", { language: "python" });
    const other = nodes.find((n) => n.id !== sb.node)!;
    const third = nodes.find((n) => n.id !== sb.node && n.id !== other.id)!;
    const up = await fetch(`${other.url}/sandboxes/${sb.id}/files?path=/data/in.txt`, { method: "PUT", headers: { authorization: `Bearer ${KEY}` }, body: "x".repeat(300_000) });
    assert.equal(up.status, 204, await up.text());
    const down = await fetch(`${third.url}/sandboxes/${sb.id}/files?path=/data/in.txt`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal((await down.text()).length, 300_000);
    // Server-sent events arrive as they happen, through the forwarding node.
    const stream = await api(other).req("POST", `/sandboxes/${sb.id}/run/stream`, { code: "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)" });
    assert.equal(stream.headers.get("content-type")?.split(";")[0], "text/event-stream");
    const reader = stream.body!.getReader();
    const t0 = Date.now();
    let text = "";
    let firstAt = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
      if (!firstAt && text.includes("event: stdout")) firstAt = Date.now() - t0;
    }
    assert.match(text, /event: result/);
    assert.ok(firstAt > 0 && firstAt < 700, `first stdout event after ${firstAt} ms (the run takes ~900 ms): streamed, not buffered`);
    // An HTTP/1.0 caller that sends no Host: forwarded with one (the owner, asked in HTTP/1.1, requires it).
    const u = new URL(other.url);
    const sock = net.connect(Number(u.port), u.hostname);
    sock.write(`GET /sandboxes/${sb.id} HTTP/1.0\r\nAuthorization: Bearer ${KEY}\r\n\r\n`);
    let raw = "";
    sock.on("data", (d: Buffer) => (raw += d.toString()));
    await once(sock, "close");
    assert.match(raw, /^HTTP\/1\.[01] 200 /, raw.slice(0, 300));
    assert.equal((JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4)) as Info).id, sb.id);
    // Bob's key: the same 404 through every node, for a sandbox that exists.
    for (const n of nodes) {
      const r = await api(n, KEY2).req("GET", `/sandboxes/${sb.id}`);
      assert.equal(r.status, 404, `bob through ${n.id}`);
    }
    await api(third).req("DELETE", `/sandboxes/${sb.id}`);
  });

  it("a key's maxSandboxes holds across the nodes (etcd transactions), and frees when one is deleted", async () => {
    const bob = nodes.map((n) => api(n, KEY2));
    // Concurrent creates through all three nodes for a key allowed 2: exactly 2 succeed.
    const tries = await Promise.all([0, 1, 2, 0, 1, 2].map((i) => bob[i]!.req("POST", "/sandboxes", { language: "javascript" })));
    const statuses = tries.map((r) => r.status).sort();
    assert.deepEqual(statuses, [201, 201, 429, 429, 429, 429], statuses.join(","));
    const refused = (await tries.find((r) => r.status === 429)!.json()) as { error: { code: string; message: string } };
    assert.equal(refused.error.code, "QUOTA_EXCEEDED");
    const made = (await Promise.all(tries.filter((r) => r.status === 201).map((r) => r.json()))) as Info[];
    assert.equal((await bob[2]!.req("DELETE", `/sandboxes/${made[0]!.id}`)).status, 204);
    const again = await bob[1]!.req("POST", "/sandboxes", { language: "javascript" });
    assert.equal(again.status, 201, await again.clone().text());
    const last = (await again.json()) as Info;
    for (const id of [made[1]!.id, last.id]) assert.equal((await bob[0]!.req("DELETE", `/sandboxes/${id}`)).status, 204);
  });

  it("a heavy create through the nano-only node lands on a node with the heavy tier; its exposed ports (HTTP, WebSocket) work through the nano-only node", { skip: skipHeavy }, async () => {
    await ensureImage();
    const c = nodes.find((n) => n.id === "c")!;
    const sb = await api(c).json<Info>("POST", "/sandboxes", { tier: "heavy", language: "python" });
    assert.ok(sb.node === "a" || sb.node === "b", `placed on ${sb.node}`);
    const r = await api(c).json<{ stdout: string; exitCode: number }>("POST", `/sandboxes/${sb.id}/commands`, { cmd: "echo hi from $(uname -s)" });
    assert.deepEqual([r.exitCode, r.stdout], [0, "hi from Linux\n"]);
    // A web app in the sandbox, previewed through node c (which forwards to the sandbox's node).
    const up = await fetch(`${c.url}/sandboxes/${sb.id}/files?path=/tmp/guest_app.py`, { method: "PUT", headers: { authorization: `Bearer ${KEY}` }, body: GUEST_APP });
    assert.equal(up.status, 204);
    const launch = "import subprocess, sys; subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)";
    for (const [mode, port] of [["http", 8000], ["ws", 8001]] as const) {
      await api(c).json("POST", `/sandboxes/${sb.id}/commands`, { cmd: ["python3", "-c", launch, "python3", "/tmp/guest_app.py", mode, String(port)] });
      await api(c).json("POST", `/sandboxes/${sb.id}/commands`, { cmd: ["python3", "-c", `import socket, time\nfor _ in range(100):\n    try:\n        socket.create_connection(("127.0.0.1", ${port}), 1).close(); break\n    except OSError:\n        time.sleep(0.1)`] });
    }
    const exposed = await api(c).json<{ url: string }>("POST", `/sandboxes/${sb.id}/ports`, { port: 8000 });
    assert.equal(exposed.url, `${c.url}/sandboxes/${sb.id}/ports/8000/`, "the URL names the node the client asked");
    const page = await fetch(`${exposed.url}deep?q=1`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(page.status, 200);
    assert.equal(((await page.json()) as { path: string }).path, "/deep?q=1");
    await api(c).json("POST", `/sandboxes/${sb.id}/ports`, { port: 8001 });
    const ws = new WebSocket(`${c.url.replace(/^http/, "ws")}/sandboxes/${sb.id}/ports/8001/chat`, { headers: { authorization: `Bearer ${KEY}` } });
    const first = await new Promise<string>((resolve, reject) => {
      ws.once("message", (d) => resolve(String(d)));
      ws.once("unexpected-response", (_q, res) => reject(new Error(`refused with ${res.statusCode}`)));
      ws.once("error", reject);
    });
    assert.equal((JSON.parse(first) as { requestLine: string }).requestLine, "GET /chat HTTP/1.1");
    const echoed = new Promise<string>((resolve) => ws.once("message", (d) => resolve(String(d))));
    ws.send("through node c");
    assert.equal(await echoed, "through node c");
    ws.close();
    // Another key cannot open it through any node.
    const refused = await new Promise<number>((resolve) => {
      const w = new WebSocket(`${c.url.replace(/^http/, "ws")}/sandboxes/${sb.id}/ports/8001/`, { headers: { authorization: `Bearer ${KEY2}` } });
      w.once("unexpected-response", (_q, res) => resolve(res.statusCode ?? 0));
      w.once("open", () => resolve(101));
      w.once("error", () => resolve(-1));
    });
    assert.equal(refused, 404);
    assert.equal((await api(c).req("DELETE", `/sandboxes/${sb.id}`)).status, 204);
  });

  it("snapshots: taken through one node, listed through every node, restored and deleted through others", async () => {
    const sb = await api(nodes[0]!).json<Info>("POST", "/sandboxes", { language: "python" });
    const others = nodes.filter((n) => n.id !== sb.node);
    await api(others[0]!).json("POST", `/sandboxes/${sb.id}/run`, { code: "snapped = [1, 2, 3]" });
    const snap = await api(others[0]!).json<{ id: string; sandboxId: string }>("POST", `/sandboxes/${sb.id}/snapshots`);
    assert.equal(snap.sandboxId, sb.id);
    for (const n of nodes) {
      const l = await api(n).json<{ snapshots: { id: string }[] }>("GET", "/snapshots");
      assert.deepEqual(l.snapshots.map((x) => x.id), [snap.id], `listed through ${n.id}`);
      assert.deepEqual((await api(n, KEY2).json<{ snapshots: unknown[] }>("GET", "/snapshots")).snapshots, [], "not another key's");
      assert.equal((await api(n, KEY2).req("POST", `/snapshots/${snap.id}/restore`, {})).status, 404);
    }
    const restored = await api(others[1]!).json<Info>("POST", `/snapshots/${snap.id}/restore`, {});
    assert.equal(restored.node, sb.node, "restored where the snapshot is");
    assert.equal((await api(others[1]!).json<{ value?: string }>("POST", `/sandboxes/${restored.id}/run`, { code: "sum(snapped)" })).value, "6");
    assert.equal((await api(others[1]!).req("DELETE", `/snapshots/${snap.id}`)).status, 204);
    for (const n of nodes) assert.deepEqual((await api(n).json<{ snapshots: unknown[] }>("GET", "/snapshots")).snapshots, []);
    for (const id of [sb.id, restored.id]) assert.equal((await api(others[0]!).req("DELETE", `/sandboxes/${id}`)).status, 204);
  });

  it("a key's maxSnapshots holds across the nodes (etcd transactions), and frees when one is deleted", async () => {
    // Sandboxes on two different nodes (a create through an idle node stays there; the rooms are published each second).
    const made: Info[] = [];
    for (const n of nodes) {
      made.push(await api(n, KEY3).json<Info>("POST", "/sandboxes", { language: "javascript" }));
      await new Promise((r) => setTimeout(r, 1100));
    }
    const first = made[0]!;
    const second = made.find((m) => m.node !== first.node);
    assert.ok(second, made.map((m) => m.node).join(","));
    const carol = api(nodes[0]!, KEY3);
    const snap = await carol.json<{ id: string }>("POST", `/sandboxes/${first.id}/snapshots`);
    // On another node, which holds none of carol's snapshots itself: the cluster's count says no.
    const refused = await carol.req("POST", `/sandboxes/${second.id}/snapshots`);
    assert.equal(refused.status, 429, await refused.clone().text());
    const body = (await refused.json()) as { error: { code: string; message: string; details?: { quota?: string } } };
    assert.equal(body.error.code, "QUOTA_EXCEEDED");
    assert.match(body.error.message, /maxSnapshots/);
    assert.equal((await carol.req("DELETE", `/snapshots/${snap.id}`)).status, 204);
    const again = await carol.json<{ id: string }>("POST", `/sandboxes/${second.id}/snapshots`);
    assert.equal((await etcdKeys(etcd, `/agentbox/snapshot-owners/${createHash("sha256").update("carol").digest("hex").slice(0, 32)}/`)).length, 1, "one snapshot counted in etcd");
    assert.equal((await carol.req("DELETE", `/snapshots/${again.id}`)).status, 204);
    assert.equal((await etcdKeys(etcd, `/agentbox/snapshot-owners/${createHash("sha256").update("carol").digest("hex").slice(0, 32)}/`)).length, 0, "deleting it frees its place");
    for (const m of made) assert.equal((await carol.req("DELETE", `/sandboxes/${m.id}`)).status, 204);
  });

  it("the E2B SDK, unchanged, creates through one node and runs through another", async () => {
    const saved = { E2B_API_URL: process.env.E2B_API_URL, E2B_SANDBOX_URL: process.env.E2B_SANDBOX_URL, E2B_API_KEY: process.env.E2B_API_KEY };
    const point = (n: Node) => Object.assign(process.env, { E2B_API_URL: `${n.url}/e2b`, E2B_SANDBOX_URL: `${n.url}/e2b/sandbox`, E2B_API_KEY: E2B_KEY });
    try {
      point(nodes[1]!);
      const sbx = await E2bSandbox.create({ template: "agentbox-python" });
      await sbx.runCode("n = 40");
      for (const n of nodes) {
        point(n);
        const there = await E2bSandbox.connect(sbx.sandboxId);
        assert.equal((await there.runCode("n + 2")).text, "42", `through ${n.id}`);
        const listed = await E2bSandbox.list().nextItems();
        assert.ok(listed.some((s) => s.sandboxId === sbx.sandboxId), `listed through ${n.id}`);
      }
      // Signed file URLs name no sandbox: whichever node they reach finds the one whose token signed them.
      await sbx.files.write("/home/user/signed.txt", "signed bytes");
      for (const n of nodes) {
        point(n);
        const there = await E2bSandbox.connect(sbx.sandboxId);
        const down = await fetch(await there.downloadUrl("/home/user/signed.txt"));
        assert.equal(await down.text(), "signed bytes", `download through ${n.id}`);
        const form = new FormData();
        form.append("file", new Blob([`up via ${n.id}`]), "up.txt");
        const up = await fetch(await there.uploadUrl(`/home/user/up-${n.id}.txt`), { method: "POST", body: form });
        assert.equal(up.status, 200, await up.clone().text());
        assert.equal(await there.files.read(`/home/user/up-${n.id}.txt`), `up via ${n.id}`);
        const forged = new URL(await there.downloadUrl("/home/user/signed.txt"));
        forged.searchParams.set("path", "/home/user/other.txt");
        assert.equal((await fetch(forged)).status, 401, "a forged signature fails on every node");
      }
      point(nodes[2]!);
      await E2bSandbox.kill(sbx.sandboxId);
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it("the Python client works through any node", async () => {
    const script = `
import json, os, sys
from agentbox_client import Sandbox
urls = json.loads(os.environ["URLS"])
key = os.environ["KEY"]
sb = Sandbox.create(language="python", base_url=urls[0], api_key=key)
sb.run_code("total = 0")
for u in urls:
    there = Sandbox.connect(sb.id, base_url=u, api_key=key)
    out = []
    r = there.run_code("total += 1\\nprint('n', total)", on_stdout=out.append)
    assert "".join(out) == "n %d\\n" % (urls.index(u) + 1), out
    assert there.info.node == sb.info.node
ids = [s.id for s in Sandbox.list(base_url=urls[2], api_key=key)]
assert sb.id in ids, ids
sb.kill()
print("ok", sb.info.node)
`;
    const py = spawn("python3", ["-c", script], { cwd: CLIENT_DIR, env: { ...agentboxEnv(), URLS: JSON.stringify(nodes.map((n) => n.url)), KEY, PYTHONDONTWRITEBYTECODE: "1" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    py.stdout.on("data", (d: Buffer) => (out += d.toString()));
    py.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const [code] = (await once(py, "exit")) as [number | null];
    assert.equal(code, 0, out);
    assert.match(out, /^ok [abc]$/m);
  });

  it("a paused sandbox is resumed on another node, with its variables and files, once its node is gone (SIGKILL)", async () => {
    // Placed on a or b (both heavy-capable, so the killed node is not c, which later tests keep).
    const sb = await api(nodes[0]!).json<Info>("POST", "/sandboxes", { language: "python" });
    const owner = by(sb.node!);
    const setup = await api(owner).json<{ error?: unknown }>("POST", `/sandboxes/${sb.id}/run`, { code: "import os\nkept = 'from ' + 'before'\nos.makedirs('/data', exist_ok=True)\nopen('/data/f.txt', 'w').write('on disk')" });
    assert.equal(setup.error, undefined, JSON.stringify(setup));
    const paused = await api(owner).json<Info>("POST", `/sandboxes/${sb.id}/pause`);
    assert.equal(paused.status, "paused");
    await owner.kill("SIGKILL");
    const other = nodes.find((n) => n !== owner)!;
    // Once the dead node's lease ends, the next request takes the sandbox over from the shared directory.
    const r = await until(
      async () => {
        const x = await api(other).req("POST", `/sandboxes/${sb.id}/run`, { code: "kept + ' / ' + open('/data/f.txt').read()" });
        return x.status === 200 ? ((await x.json()) as { value?: string }) : (await x.arrayBuffer(), undefined);
      },
      (LEASE_S + 8) * 1000,
      "the paused sandbox to resume on another node",
    );
    assert.equal(r.value, "'from before / on disk'", JSON.stringify(r));
    const now = await api(other).json<Info>("GET", `/sandboxes/${sb.id}`);
    assert.equal(now.node, other.id);
    await api(other).req("DELETE", `/sandboxes/${sb.id}`);
  });

  it("a node drained with SIGTERM pauses its sandboxes; another node resumes them at once", async () => {
    await restartDead();
    await new Promise((r) => setTimeout(r, 1300)); // the nodes' counts published
    const made: Info[] = [];
    for (let i = 0; i < 3; i++) {
      made.push(await api(nodes[2]!).json<Info>("POST", "/sandboxes", { language: "python" }));
      await new Promise((r) => setTimeout(r, 1300));
    }
    const victim = by(made.find((m) => m.node !== "c")!.node!);
    const mine = made.filter((m) => m.node === victim.id);
    for (const m of mine) await api(victim).json("POST", `/sandboxes/${m.id}/run`, { code: `x = ${JSON.stringify(m.id)}` });
    await victim.kill("SIGTERM");
    assert.equal(victim.proc.exitCode, 0, victim.stderr());
    const other = nodes.find((n) => n !== victim)!;
    // No lease to wait for: the drained node left the cluster as it exited.
    for (const m of mine) {
      const r = await api(other).json<{ value?: string }>("POST", `/sandboxes/${m.id}/run`, { code: "x" });
      assert.equal(r.value, `'${m.id}'`);
    }
    for (const m of made) await api(other).req("DELETE", `/sandboxes/${m.id}`);
  });

  it("a node cut off from etcd past its lease (SIGSTOP) comes back: a paused sandbox another node took over meanwhile is that node's, through either", async () => {
    await restartDead();
    const sb = await api(nodes[0]!).json<Info>("POST", "/sandboxes", { language: "python" });
    const holder = by(sb.node!);
    const other = nodes.find((n) => n !== holder)!;
    await api(holder).json("POST", `/sandboxes/${sb.id}/run`, { code: "z = 'kept'" });
    await api(holder).json("POST", `/sandboxes/${sb.id}/pause`);
    holder.proc.kill("SIGSTOP");
    try {
      const r = await until(
        async () => {
          const x = await api(other).req("POST", `/sandboxes/${sb.id}/run`, { code: "z" });
          return x.status === 200 ? ((await x.json()) as { value?: string }) : (await x.arrayBuffer(), undefined);
        },
        (LEASE_S + 8) * 1000,
        "the stopped node's paused sandbox taken over",
      );
      assert.equal(r.value, "'kept'");
    } finally {
      holder.proc.kill("SIGCONT");
    }
    // The holder wakes up with its old paused copy in memory: the catalog says the other node has it.
    const through = await until(
      async () => {
        const x = await api(holder).req("POST", `/sandboxes/${sb.id}/run`, { code: "z + '!'" }, 10_000).catch(() => undefined);
        return x?.status === 200 ? ((await x.json()) as { value?: string }) : (await x?.arrayBuffer(), undefined);
      },
      20_000,
      "the woken node to answer for the sandbox",
    );
    assert.equal(through.value, "'kept!'");
    assert.equal((await api(holder).json<Info>("GET", `/sandboxes/${sb.id}`)).node, other.id, "served by the node that took it over");
    assert.equal((await api(holder).req("DELETE", `/sandboxes/${sb.id}`)).status, 204);
  });

  it("a node killed with SIGKILL under load: its sandboxes answer 410 within the lease time, the others are unaffected, no request hangs", async () => {
    await restartDead();
    await new Promise((r) => setTimeout(r, 1300));
    const made: Info[] = [];
    for (let i = 0; i < 4; i++) {
      made.push(await api(nodes[0]!).json<Info>("POST", "/sandboxes", { language: "python" }));
      await new Promise((r) => setTimeout(r, 1100));
    }
    const victim = by(made.find((m) => m.node !== "c")!.node!);
    const theirs = made.filter((m) => m.node === victim.id);
    const ours = made.filter((m) => m.node !== victim.id);
    assert.ok(theirs.length > 0 && ours.length > 0, made.map((m) => m.node).join(","));
    const entry = nodes.find((n) => n !== victim)!;
    // Load: every sandbox is asked in a loop through a node that survives, while the victim dies.
    let stop = false;
    const seen = new Map<string, (number | string)[]>();
    const load = made.map(async (m) => {
      while (!stop) {
        let status: number | string;
        try {
          const r = await api(entry).req("POST", `/sandboxes/${m.id}/run`, { code: "1 + 1" }, 15_000);
          await r.arrayBuffer();
          status = r.status;
        } catch (e) {
          // A run in flight on the node as it died loses its connection (never a hang: 15 s bound).
          status = (e as Error).name === "TimeoutError" ? "hung" : "cut";
        }
        seen.set(m.id, [...(seen.get(m.id) ?? []), status]);
        await new Promise((res) => setTimeout(res, 50));
      }
    });
    await new Promise((r) => setTimeout(r, 500));
    const killedAt = Date.now();
    await victim.kill("SIGKILL");
    const goneAfter = await until(
      async () => {
        const rs = await Promise.all(theirs.map((m) => api(entry).req("GET", `/sandboxes/${m.id}`, undefined, 10_000).then((r) => r.status)));
        return rs.every((s) => s === 410) ? Date.now() - killedAt : undefined;
      },
      (LEASE_S + 6) * 1000,
      "the dead node's sandboxes to answer 410",
    );
    stop = true;
    await Promise.all(load);
    const body = (await (await api(entry).req("POST", `/sandboxes/${theirs[0]!.id}/run`, { code: "1" })).json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "NODE_GONE");
    assert.match(body.error.message, new RegExp(`node ${victim.id}`));
    assert.ok(goneAfter <= (LEASE_S + 3) * 1000, `410 after ${goneAfter} ms (lease ${LEASE_S} s)`);
    for (const m of ours) assert.ok(seen.get(m.id)!.every((s) => s === 200), `${m.id} on a live node: ${seen.get(m.id)!.join(",")}`);
    for (const m of theirs) assert.ok(seen.get(m.id)!.every((s) => s === 200 || s === 503 || s === 410 || s === "cut"), `${m.id}: ${seen.get(m.id)!.join(",")}`);
    for (const m of ours) await api(entry).req("DELETE", `/sandboxes/${m.id}`);
    // The gone ones stay 410 until deleted (deleting one clears its record: then 404) or until the
    // retention ends (the sweep removes the records: 404 without a delete).
    const [kept, ...rest] = theirs;
    for (const m of rest) assert.equal((await api(entry).req("DELETE", `/sandboxes/${m.id}`)).status, 204);
    if (rest[0]) assert.equal((await api(entry).req("GET", `/sandboxes/${rest[0].id}`)).status, 404);
    const goneAt = killedAt + goneAfter;
    const swept = await until(
      async () => {
        const r = await api(entry).req("GET", `/sandboxes/${kept!.id}`, undefined, 10_000);
        await r.arrayBuffer();
        assert.ok(r.status === 410 || r.status === 404, `${kept!.id}: ${r.status}`);
        return r.status === 404 ? Date.now() - goneAt : undefined;
      },
      (RETENTION_S + 10) * 1000,
      "the sweep to remove the gone node's records",
    );
    assert.ok(swept >= (RETENTION_S - 1.5) * 1000, `404 ${swept} ms after the 410 (retention ${RETENTION_S} s): kept for the retention`);
    const stale = await etcdKeys(etcd, `/agentbox/sandboxes/${kept!.id}`);
    assert.equal(stale.length, 0, "the swept record is gone from etcd");
    assert.equal((await etcdKeys(etcd, `/agentbox/gone/${victim.id}`)).length, 0, "the gone mark goes with the node's last record");
    nodes = nodes.filter((n) => n !== victim);
  });

  it("a node restarted under its id (after SIGKILL) drops the records its earlier run left", async () => {
    await restartDead();
    const c = by("c");
    await new Promise((r) => setTimeout(r, 1300));
    // Through c on an idle cluster: placed on c (a tie goes to the entry node) — or wherever it landed.
    const sb = await api(c).json<Info>("POST", "/sandboxes", { language: "javascript" });
    const holder = by(sb.node!);
    assert.equal((await etcdKeys(etcd, `/agentbox/sandboxes/${sb.id}`)).length, 1);
    await holder.kill("SIGKILL");
    nodes = nodes.filter((n) => n !== holder);
    nodes.push(await startNode(etcd.spec, holder.id, nodeArgs(holder.id), { AGENTBOX_API_KEYS: JSON.stringify(KEYS) }));
    // Joined again once its old lease ran out (at most the lease time): the stale record is gone, no 410 to wait out.
    assert.equal((await etcdKeys(etcd, `/agentbox/sandboxes/${sb.id}`)).length, 0);
    for (const n of nodes) assert.equal((await api(n).req("GET", `/sandboxes/${sb.id}`)).status, 404, `through ${n.id}`);
  });

  it("a second process given a live node's --node-id is refused with a clear error; the live node and its sandboxes are untouched", async () => {
    const live = nodes[0]!;
    const sb = await api(live).json<Info>("POST", "/sandboxes", { language: "javascript" });
    const holder = by(sb.node!);
    const t0 = Date.now();
    await assert.rejects(
      startNode(etcd.spec, holder.id, nodeArgs(holder.id), { AGENTBOX_API_KEYS: JSON.stringify(KEYS) }),
      (e: Error) => e.message.includes(`node id "${holder.id}" is held by another live node`) && e.message.includes("--node-id"),
    );
    assert.ok(Date.now() - t0 >= LEASE_S * 1000, "it waited out a lease before refusing (a restarted node's old record would have gone by then)");
    assert.equal((await etcdKeys(etcd, `/agentbox/sandboxes/${sb.id}`)).length, 1, "the live node's record stays");
    for (const n of nodes) assert.equal((await api(n).json<{ value?: string }>("POST", `/sandboxes/${sb.id}/run`, { code: "6*7" })).value, "42", `through ${n.id}`);
    await api(live).req("DELETE", `/sandboxes/${sb.id}`);
  });

  it("an etcd member killed: the cluster goes on; all of etcd gone: creates are refused (503), running sandboxes keep answering; etcd back: creates again", async () => {
    await etcd.members[0]!.kill("SIGKILL");
    const sb = await until(
      async () => {
        const r = await api(nodes[0]!).req("POST", "/sandboxes", { language: "python" });
        return r.status === 201 ? ((await r.json()) as Info) : (await r.arrayBuffer(), undefined);
      },
      15_000,
      "a create with one etcd member down",
    );
    const via = nodes.find((n) => n.id !== sb.node)!;
    await api(via).json("POST", `/sandboxes/${sb.id}/run`, { code: "y = 7" });
    const owner = by(sb.node!);
    await Promise.all(etcd.members.map((m) => m.kill("SIGKILL")));
    const refused = await api(owner).req("POST", "/sandboxes", { language: "python" }, 20_000);
    assert.equal(refused.status, 503);
    const body = (await refused.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "CLUSTER_UNAVAILABLE");
    assert.match(body.error.message, /etcd/);
    // Its own node still serves it, and another node still forwards to it (the catalog it has seen).
    assert.equal((await api(owner).json<{ value?: string }>("POST", `/sandboxes/${sb.id}/run`, { code: "y * 6" })).value, "42");
    assert.equal((await api(via).json<{ value?: string }>("POST", `/sandboxes/${sb.id}/run`, { code: "y * 6" })).value, "42");
    const h = (await (await fetch(`${owner.url}/healthz`)).json()) as { cluster: { store: string } };
    assert.equal(h.cluster.store, "unreachable");
    // etcd back (every member, same data): the nodes join again (new leases) and take creates.
    for (const m of etcd.members) m.restart();
    const next = await until(
      async () => {
        const r = await api(via).req("POST", "/sandboxes", { language: "python" }, 10_000).catch(() => undefined);
        return r?.status === 201 ? ((await r.json()) as Info) : (await r?.arrayBuffer(), undefined);
      },
      40_000,
      "a create once etcd is back",
    );
    assert.equal((await api(owner).json<{ value?: string }>("POST", `/sandboxes/${next.id}/run`, { code: "2 + 2" })).value, "4");
    // The sandbox from before the outage is still there, through either node, and counts again.
    assert.equal((await api(via).json<{ value?: string }>("POST", `/sandboxes/${sb.id}/run`, { code: "y" })).value, "7");
    const h2 = await until(
      async () => {
        const x = (await (await fetch(`${owner.url}/healthz`)).json()) as { cluster: { store: string; nodes: string[] } };
        return x.cluster.store === "ok" && x.cluster.nodes.length === nodes.length ? x : undefined;
      },
      20_000,
      "every node back in the cluster",
    );
    assert.deepEqual(h2.cluster.nodes, nodes.map((n) => n.id).sort());
  });
});
