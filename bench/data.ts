// The code interpreter on the heavy tier's data image (gVisor): a pooled sandbox → its first
// matplotlib PNG, beside a cold one (no pool: the image's warm imports are paid in the request)
// and beside the same chart from a fresh python3 process in the sandbox (what a sandbox without a
// warm REPL pays); and a pandas describe() of a 100,000-row CSV returned as an HTML table.
// Prints why and returns no rows when gVisor cannot run here.
import { buildImage, Sandbox, type RunResult, type SandboxOptions } from "../src/index.js";
import { gvisorUnavailableReason } from "../src/engines/heavy-gvisor/box.js";
import { stats, timed, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

const opts = { tier: "heavy", backend: "gvisor", image: "data", limits: { memoryMb: 512, timeoutMs: 120_000 } } as const satisfies SandboxOptions;
const CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('bench')";
const ROWS = 100_000;

function hasPng(r: RunResult): boolean {
  return (r.results ?? []).some((x) => x.data["image/png"]?.startsWith("iVBORw0KGgo"));
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`bench data: ${what}`);
}

async function run({ quick, progress }: SectionContext): Promise<SectionResult> {
  const why = gvisorUnavailableReason();
  if (why) {
    progress(`data: skipped: ${why}`);
    return { rows: [], notes: [`skipped: ${why}`], summary: { skipped: why } };
  }
  const N = { cold: quick ? 2 : 5, pooled: quick ? 5 : 15, describe: quick ? 3 : 10, auto: quick ? 2 : 5 };
  const rows: Row[] = [];
  progress("data: building/finding the data image");
  const image = await buildImage({ preset: "data", onProgress: (l) => progress(`data: image: ${l}`) });

  await Sandbox.configurePool({ size: 0 });
  progress(`data: cold create → first PNG x${N.cold}`);
  const cold: number[] = [];
  const fresh: number[] = [];
  for (let i = 0; i < N.cold; i++) {
    const t0 = performance.now();
    const sb = await Sandbox.create({ ...opts, pool: false });
    const r = await sb.runCode(CHART);
    cold.push(performance.now() - t0);
    check(hasPng(r), `no PNG from a cold sandbox: ${r.stderr}${r.error?.traceback ?? ""}`);
    // The baseline: the same chart from a new python3 process (what every cell would cost without a warm REPL).
    fresh.push(await timed(async () => {
      const c = await sb.commands.run(["python3", "-c", `import matplotlib\nmatplotlib.use("Agg")\n${CHART}\nimport io\nb = io.BytesIO()\nplt.savefig(b, format="png")\nprint(len(b.getvalue()))`]);
      check(c.exitCode === 0 && Number(c.stdout) > 1000, `the baseline chart failed: ${c.stderr}`);
    }));
    await sb.kill();
  }
  rows.push(stats("data baseline: python3 -c (import matplotlib, plot, PNG) in a sandbox", "ms", fresh));
  rows.push(stats("data cold (pool 0): create → first matplotlib PNG", "ms", cold));

  progress(`data: pooled create → first PNG x${N.pooled}`);
  await Sandbox.configurePool({ size: 1 });
  await (await Sandbox.create(opts)).kill(); // makes this configuration's pool
  const pooled: number[] = [];
  for (let i = 0; i < N.pooled; i++) {
    await Sandbox.configurePool({ size: 1, wait: true });
    await new Promise((r) => setTimeout(r, 300)); // let the refill's start-up settle
    const t0 = performance.now();
    const sb = await Sandbox.create(opts);
    const r = await sb.runCode(CHART);
    pooled.push(performance.now() - t0);
    check(hasPng(r), `no PNG from a pooled sandbox: ${r.stderr}`);
    await sb.kill();
  }
  rows.push(stats("data pooled: create → first matplotlib PNG", "ms", pooled));

  // Tier "auto" on a pandas cell: the first one moves the sandbox (a pooled data-image sandbox of
  // the same configuration, one nano cell replayed); later ones run on the heavy tier directly.
  progress(`data: tier auto, pandas cell x${N.auto}`);
  const autoOpts = { tier: "auto", image: "data", limits: { memoryMb: opts.limits.memoryMb, timeoutMs: 120_000 } } as const satisfies SandboxOptions;
  const PANDAS = "import pandas as pd\npd.DataFrame({'a': [1, 2, 3], 'b': [4.0, 5.5, 6.5]}).describe()";
  const moved: number[] = [];
  const after: number[] = [];
  for (let i = 0; i < N.auto; i++) {
    await Sandbox.configurePool({ size: 1, wait: true });
    await new Promise((r) => setTimeout(r, 300));
    const sb = await Sandbox.create(autoOpts);
    await sb.runCode("rows = list(range(10))");
    let r!: RunResult;
    moved.push(await timed(async () => (r = await sb.runCode(PANDAS))));
    check(r.tier === "heavy" && (r.results ?? []).some((x) => x.data["text/html"]), `the auto pandas cell: ${r.tier} ${r.stderr}`);
    for (let j = 0; j < 5; j++) after.push(await timed(() => sb.runCode(PANDAS)));
    await sb.kill();
  }
  rows.push(stats('data tier "auto": first pandas cell (moves to a pooled data-image sandbox, replays 1 cell)', "ms", moved));
  rows.push(stats('data tier "auto": pandas describe() cell after the move', "ms", after));
  await Sandbox.shutdownPool();
  await Sandbox.configurePool({ size: 0 });

  progress(`data: describe() of a ${ROWS}-row CSV x${N.describe}`);
  const csv = ["id,group,x,y", ...Array.from({ length: ROWS }, (_, i) => `${i},g${i % 7},${(i * 7919) % 1000},${((i * 104729) % 10007) / 10}`)].join("\n") + "\n";
  const sb = await Sandbox.create({ ...opts, pool: false });
  await sb.files.write("/home/user/big.csv", csv);
  await sb.runCode("1"); // waits for the warm imports of a sandbox started without the pool
  const describe: number[] = [];
  for (let i = 0; i < N.describe; i++) {
    describe.push(await timed(async () => {
      const r = await sb.runCode("import pandas as pd\npd.read_csv('/home/user/big.csv').describe()");
      check((r.results ?? []).some((x) => x.main && x.data["text/html"]?.includes("<table")), `no HTML table: ${r.stderr}${r.error?.traceback ?? ""}`);
    }));
  }
  rows.push(stats(`data runCode: pandas read_csv + describe() of ${ROWS} rows → HTML table`, "ms", describe));
  await sb.kill();

  const med = (name: string) => rows.find((r) => r.name.startsWith(name))!.median;
  const summary = {
    image: image.id,
    csvBytes: csv.length,
    targets: { pooledFirstPngP50LE300ms: med("data pooled") <= 300 },
  };
  return { rows, notes: [`targets: ${JSON.stringify(summary.targets)}`], summary };
}

export const data: Section = { name: "data", run };
