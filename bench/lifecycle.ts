// Lifecycle through the HTTP API (in-process server): 50 nano sandboxes paused and resumed on
// demand (more than the server's live slots); pause and resume of a heavy sandbox per
// backend (POST /pause; the first run after it, which resumes), the resident memory a pause frees
// (the backend's host processes: runsc or QEMU, summed from /proc before and after), and a
// snapshot → restore → first result. Prints why and returns no rows for a backend that cannot run.
import { buildMicrovmArtefacts, buildImage } from "../src/index.js";
import { gvisorUnavailableReason } from "../src/engines/heavy-gvisor/box.js";
import { qemuUnavailableReason } from "../src/engines/microvm/qemu.js";
import { createServer, KeyRing } from "../src/server/index.js";
import { rssOfMatchingMb, stats, timed, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

/** Resident memory of every host process whose command line contains `needle`, bytes. */
const rssOf = (needle: string): number => rssOfMatchingMb(needle) * 2 ** 20;

async function runSection({ quick, progress }: SectionContext): Promise<SectionResult> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const summary: Record<string, unknown> = {};
  const KEY = "bench-lifecycle-key-0123456789";
  const keys = KeyRing.fromEntries([{ name: "bench", key: KEY, maxSandboxes: 100 }]);
  const server = await createServer({ keys, poolSize: 2, maxSandboxes: 16, log: () => undefined });
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await server.app.request(path, { method, headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
    if (res.status >= 300) throw new Error(`bench lifecycle: ${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json!;
  };
  const backends = [
    { name: "gVisor", backend: "gvisor", why: gvisorUnavailableReason(), needle: "runsc", prepare: () => buildImage({}) },
    { name: "microVM", backend: "microvm", why: qemuUnavailableReason(), needle: "qemu-system", prepare: () => buildMicrovmArtefacts({}) },
  ] as const;
  const n = quick ? 3 : 8;
  try {
    // Nano: 50 sandboxes paused (more than the server's 16 live slots), then each resumed on demand by a run.
    const many = 50;
    progress(`lifecycle: nano: ${many} sandboxes created and paused`);
    const ids: string[] = [];
    const nanoPause: number[] = [];
    const nanoFreed: number[] = [];
    for (let i = 0; i < many; i++) {
      const id = (await call("POST", "/sandboxes", { language: "python", seed: i, idleTimeoutMs: 3600_000 })).id as string;
      await call("POST", `/sandboxes/${id}/run`, { code: `x = ${i}` });
      await new Promise((r) => setTimeout(r, 200)); // the pool's refill settles, so the difference is this worker's
      const before = rssOf("python-worker");
      nanoPause.push(await timed(() => call("POST", `/sandboxes/${id}/pause`)));
      nanoFreed.push((before - rssOf("python-worker")) / 2 ** 20);
      ids.push(id);
    }
    const workers = rssOf("python-worker");
    progress(`lifecycle: nano: ${many} resumed on demand`);
    const nanoResume: number[] = [];
    for (const [i, id] of ids.entries()) {
      let value: unknown;
      nanoResume.push(await timed(async () => (value = (await call("POST", `/sandboxes/${id}/run`, { code: "x" })).value)));
      if (value !== String(i)) throw new Error(`bench lifecycle: resumed nano sandbox ${i} answered ${String(value)}`);
      await call("POST", `/sandboxes/${id}/pause`); // back to paused: never more than a few live
    }
    for (const id of ids) await server.app.request(`/sandboxes/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${KEY}` } });
    rows.push(stats("lifecycle nano Python: pause (replay history saved, worker ended)", "ms", nanoPause));
    rows.push(stats("lifecycle nano Python: resident memory a pause frees", "MB", nanoFreed));
    rows.push(stats(`lifecycle nano Python: ${many} paused, each resumed on demand → first result`, "ms", nanoResume));
    notes.push(`nano: worker processes' resident memory with ${many} sandboxes paused: ${(workers / 2 ** 20).toFixed(0)} MB (the pool's warm workers only)`);
    for (const b of backends) {
      if (b.why) {
        notes.push(`${b.name} skipped: ${b.why}`);
        continue;
      }
      progress(`lifecycle: ${b.name}: preparing`);
      await b.prepare();
      const pause: number[] = [];
      const resume: number[] = [];
      const restore: number[] = [];
      const freed: number[] = [];
      const created = await call("POST", "/sandboxes", { tier: "heavy", backend: b.backend, idleTimeoutMs: 3600_000 });
      const id = created.id as string;
      await call("POST", `/sandboxes/${id}/run`, { code: "data = bytearray(64 * 1024 * 1024)\nx = 41" });
      progress(`lifecycle: ${b.name}: pause/resume x${n}`);
      for (let i = 0; i < n; i++) {
        const before = rssOf(b.needle);
        pause.push(await timed(() => call("POST", `/sandboxes/${id}/pause`)));
        freed.push((before - rssOf(b.needle)) / 2 ** 20);
        let value: unknown;
        resume.push(await timed(async () => (value = (await call("POST", `/sandboxes/${id}/run`, { code: "x + 1" })).value)));
        if (value !== "42") throw new Error(`bench lifecycle: resumed sandbox answered ${String(value)}`);
      }
      progress(`lifecycle: ${b.name}: snapshot → restore → first result x${n}`);
      const snap = await call("POST", `/sandboxes/${id}/snapshots`);
      for (let i = 0; i < n; i++) {
        let copy = "";
        restore.push(
          await timed(async () => {
            copy = (await call("POST", `/snapshots/${String(snap.id)}/restore`)).id as string;
            await call("POST", `/sandboxes/${copy}/run`, { code: "x" });
          }),
        );
        await server.app.request(`/sandboxes/${copy}`, { method: "DELETE", headers: { authorization: `Bearer ${KEY}` } });
      }
      await server.app.request(`/snapshots/${String(snap.id)}`, { method: "DELETE", headers: { authorization: `Bearer ${KEY}` } });
      await server.app.request(`/sandboxes/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${KEY}` } });
      rows.push(stats(`lifecycle ${b.name}: pause (save, end the process)`, "ms", pause));
      rows.push(stats(`lifecycle ${b.name}: resume → first result`, "ms", resume));
      rows.push(stats(`lifecycle ${b.name}: resident memory a pause frees (64 MB in the guest)`, "MB", freed));
      rows.push(stats(`lifecycle ${b.name}: snapshot restore → first result`, "ms", restore));
    }
  } finally {
    await server.close();
  }
  return { rows, notes, summary };
}

export const lifecycle: Section = { name: "lifecycle", run: runSection };
