// Network through the host: a 100 MB download from a loopback server inside a heavy sandbox (curl
// through the egress proxy, gVisor, the base image with curl) beside curl on the host (throughput ratio; target
// ≥ 0.5), connection set-up through the proxy (a tiny GET's total time as curl reports it) beside
// the host's, and Python on the nano tier: a runCode with one urlopen beside a runCode without.
// The guest's curl is told not to bypass the proxy for 127.0.0.1 (`--noproxy ''`), so the server's
// address can be granted as is. Prints why and returns no heavy rows when gVisor cannot run here.
import { execFile } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { promisify } from "node:util";
import { buildImage, Sandbox } from "../src/index.js";
import { gvisorUnavailableReason } from "../src/engines/heavy-gvisor/box.js";
import { stats, timed, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

const MB = 1024 * 1024;
const BIG_MB = 100;
const run = promisify(execFile);

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`bench network: ${what}`);
}

async function hasCurl(): Promise<boolean> {
  try {
    await run("curl", ["--version"]);
    return true;
  } catch {
    return false;
  }
}

async function runSection({ quick, progress }: SectionContext): Promise<SectionResult> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const summary: Record<string, unknown> = {};
  const chunk = Buffer.alloc(MB, "x");
  const server = http.createServer((req, res) => {
    if (req.url === "/big") {
      res.writeHead(200, { "content-length": BIG_MB * MB });
      let left = BIG_MB;
      const more = () => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return void res.once("drain", more);
        }
        res.end();
      };
      return more();
    }
    res.end("ok");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const base = `http://127.0.0.1:${port}`;
  const N = { big: quick ? 2 : 4, tiny: quick ? 10 : 30 };
  try {
    // Python on the nano tier: urlopen through the host broker.
    progress(`network: nano Python urlopen x${N.tiny}`);
    {
      await using sb = await Sandbox.create({ language: "python", network: { allow: [`127.0.0.1:${port}`] } });
      await sb.runCode("import urllib.request");
      const code = `urllib.request.urlopen("${base}/tiny").read()`;
      check((await sb.runCode(code)).value === "b'ok'", "nano urlopen did not read the body");
      const plain: number[] = [];
      const fetches: number[] = [];
      for (let i = 0; i < N.tiny; i++) {
        plain.push(await timed(() => sb.runCode("b'ok'")));
        fetches.push(await timed(() => sb.runCode(code)));
      }
      rows.push(stats("net baseline: nano Python runCode without a request", "ms", plain));
      rows.push(stats("net nano Python: runCode with urlopen (tiny GET via host broker)", "ms", fetches));
    }

    const why = gvisorUnavailableReason();
    if (why) {
      progress(`network: heavy rows skipped: ${why}`);
      notes.push(`heavy rows skipped: ${why}`);
      return { rows, notes, summary: { ...summary, heavySkipped: why } };
    }
    const curl = await hasCurl();
    if (!curl) notes.push("no curl on the host: the host baseline uses Node's http client");
    const hostGet = async (path: string): Promise<{ seconds: number; bytes: number }> => {
      if (curl) {
        const { stdout } = await run("curl", ["-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", `${base}${path}`]);
        const [s, b] = stdout.trim().split(" ");
        return { seconds: Number(s), bytes: Number(b) };
      }
      const t0 = performance.now();
      let bytes = 0;
      await new Promise<void>((resolve, reject) =>
        http.get(`${base}${path}`, (res) => {
          res.on("data", (c: Buffer) => (bytes += c.length));
          res.on("end", resolve);
          res.on("error", reject);
        }),
      );
      return { seconds: (performance.now() - t0) / 1000, bytes };
    };

    progress("network: building/finding the base image with curl");
    await buildImage({ packages: ["curl"], onProgress: (l) => progress(`network: image: ${l}`) });
    await using sb = await Sandbox.create({ tier: "heavy", backend: "gvisor", packages: ["curl"], pool: false, limits: { timeoutMs: 300_000 }, network: { allow: [`127.0.0.1:${port}`] } });
    const guestGet = async (path: string): Promise<{ seconds: number; bytes: number }> => {
      const r = await sb.commands.run(`curl -s --noproxy '' -o /dev/null -w '%{time_total} %{size_download}' ${base}${path}`);
      check(r.exitCode === 0, `guest curl failed: ${r.stderr}`);
      const [s, b] = r.stdout.trim().split(" ");
      return { seconds: Number(s), bytes: Number(b) };
    };

    progress(`network: ${BIG_MB} MB download x${N.big}, host and guest`);
    const hostMbps: number[] = [];
    const guestMbps: number[] = [];
    for (let i = 0; i < N.big; i++) {
      const h = await hostGet("/big");
      check(h.bytes === BIG_MB * MB, `host download got ${h.bytes} bytes`);
      hostMbps.push(BIG_MB / h.seconds);
      const g = await guestGet("/big");
      check(g.bytes === BIG_MB * MB, `guest download got ${g.bytes} bytes`);
      guestMbps.push(BIG_MB / g.seconds);
    }
    const hostRow = stats(`net baseline: ${BIG_MB} MB download, curl on the host`, "MB/s", hostMbps);
    const guestRow = stats(`net heavy gVisor: ${BIG_MB} MB download, curl through the proxy`, "MB/s", guestMbps);
    rows.push(hostRow, guestRow);
    const ratio = guestRow.median / hostRow.median;
    notes.push(`throughput ratio guest/host (medians) ${ratio.toFixed(3)} (target ≥ 0.5)`);
    summary.throughputRatio = ratio;

    progress(`network: tiny GET x${N.tiny}, host and guest`);
    const hostTiny: number[] = [];
    const guestTiny: number[] = [];
    for (let i = 0; i < N.tiny; i++) {
      hostTiny.push((await hostGet("/tiny")).seconds * 1000);
      guestTiny.push((await guestGet("/tiny")).seconds * 1000);
    }
    rows.push(stats("net baseline: tiny GET (connect + request), curl on the host", "ms", hostTiny));
    rows.push(stats("net heavy gVisor: tiny GET through the proxy (curl's total)", "ms", guestTiny));
    return { rows, notes, summary };
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

export const network: Section = { name: "network", run: runSection };
