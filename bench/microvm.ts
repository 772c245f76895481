// Heavy tier on the microVM backend (QEMU microvm): cold boot vs restore from the base snapshot
// (guest RAM in a shared file mapped copy-on-write vs streamed in the state file), command and
// REPL round trips, ten concurrent restores and QEMU's RSS per idle sandbox. Every row names the
// accelerator: under TCG (software emulation, this machine) the numbers are for relative use.
import { buildMicrovmArtefacts, Sandbox } from "../src/index.js";
import { microvmSpec, type MicrovmEngine } from "../src/engines/microvm/engine.js";
import { QemuHypervisor, qemuUnavailableReason } from "../src/engines/microvm/qemu.js";
import { baseSnapshot } from "../src/engines/microvm/snapshots.js";
import { MicroVm } from "../src/engines/microvm/vm.js";
import type { RamMode } from "../src/engines/microvm/hypervisor.js";
import { heavyLimitsSchema } from "../src/policy/options.js";
import { stats, timed, type Row, type Section, type SectionContext, type SectionResult } from "./lib.js";

const opts = { tier: "heavy", backend: "microvm", pool: false, limits: { memoryMb: 256 } } as const;

async function firstResult(vm: MicroVm): Promise<void> {
  const m = await vm.dispatch({ type: "request", msg: { type: "run", id: vm.client.newId(), code: "print(1)", valueCap: 64 } });
  if (m.type !== "result" || m.error) throw new Error("the guest did not run print(1)");
}

export const microvm: Section = {
  name: "microvm",
  async run(ctx: SectionContext): Promise<SectionResult> {
    const why = qemuUnavailableReason() ?? (process.getuid?.() !== 0 ? "needs root (cgroups, network namespaces)" : undefined);
    if (why) {
      ctx.progress(`microvm: skipped (${why})`);
      return { rows: [], notes: [`microvm: skipped: ${why}`], summary: { skipped: why } };
    }
    await buildMicrovmArtefacts({ onProgress: (l) => ctx.progress(`microvm: ${l}`) });
    const { spec, accel } = await microvmSpec({ limits: heavyLimitsSchema.parse(opts.limits), packages: [] });
    const a = accel.accel;
    const hv = new QemuHypervisor();
    const rows: Row[] = [];
    const n = ctx.quick ? 3 : 8;

    ctx.progress(`microvm[${a}]: cold boots`);
    const cold: number[] = [];
    for (let i = 0; i < (ctx.quick ? 1 : 3); i++) {
      cold.push(
        await timed(async () => {
          const vm = await MicroVm.boot(hv, spec);
          await firstResult(vm);
          await vm.stop(new Error("bench"));
        }),
      );
    }
    rows.push(stats(`microvm[${a}] cold boot→first result`, "ms", cold));

    const restoreMs: Record<RamMode, number[]> = { shared: [], streamed: [] };
    for (const ram of ["shared", "streamed"] as const) {
      ctx.progress(`microvm[${a}]: restores (${ram} RAM)`);
      const base = await baseSnapshot(hv, spec, ram);
      for (let i = 0; i < n; i++) {
        restoreMs[ram].push(
          await timed(async () => {
            const vm = await MicroVm.restore(hv, spec, base);
            await vm.refresh();
            await firstResult(vm);
            await vm.stop(new Error("bench"));
          }),
        );
      }
      rows.push(stats(`microvm[${a}] restore→first result (${ram} RAM)`, "ms", restoreMs[ram]));
    }

    ctx.progress(`microvm[${a}]: Sandbox.create→first result and round trips`);
    const create: number[] = [];
    for (let i = 0; i < n; i++) {
      create.push(
        await timed(async () => {
          const sb = await Sandbox.create(opts);
          await sb.runCode("print(1)");
          await sb.kill();
        }),
      );
    }
    rows.push(stats(`microvm[${a}] Sandbox.create→first result`, "ms", create));
    const sb = await Sandbox.create(opts);
    const trueRt: number[] = [];
    const runRt: number[] = [];
    for (let i = 0; i < (ctx.quick ? 10 : 30); i++) {
      trueRt.push(await timed(() => sb.commands.run("true")));
      runRt.push(await timed(() => sb.runCode("1")));
    }
    await sb.kill();
    rows.push(stats(`microvm[${a}] commands.run("true") round trip`, "ms", trueRt));
    rows.push(stats(`microvm[${a}] runCode("1") round trip`, "ms", runRt));

    ctx.progress(`microvm[${a}]: 10 concurrent restores`);
    let rssMb: number[] = [];
    const concurrent = await timed(async () => {
      const all = await Promise.all(
        Array.from({ length: 10 }, async () => {
          const s = await Sandbox.create(opts);
          await s.runCode("print(1)");
          return s;
        }),
      );
      await new Promise((r) => setTimeout(r, 500));
      rssMb = all.map((s) => (s as unknown as { engine: MicrovmEngine }).engine.rssBytes() / 2 ** 20);
      await Promise.all(all.map((s) => s.kill()));
    });
    rows.push(stats(`microvm[${a}] 10 concurrent creates→first result (all)`, "ms", [concurrent]));
    rows.push(stats(`microvm[${a}] QEMU RSS per idle sandbox`, "MB", rssMb));

    const med = (xs: number[]) => stats("", "", xs).median;
    const best = med(restoreMs.shared) <= med(restoreMs.streamed) ? "shared" : "streamed";
    const ratio = med(cold) / Math.min(med(restoreMs.shared), med(restoreMs.streamed));
    const notes = [
      `accelerator ${a}${accel.reason ? ` (${accel.reason.slice(0, 120)})` : ""}`,
      `restore is ${ratio.toFixed(1)}x faster than a cold boot (target under TCG: >= 5x); faster RAM mode: ${best}`,
      a === "kvm" ? `restore→first result p50 ${med(restoreMs[best]).toFixed(0)} ms (target under KVM: <= 100 ms)` : "the KVM target (restore p50 <= 100 ms) cannot be measured on this host",
    ];
    return { rows, notes, summary: { accel: a, accelReason: accel.reason ?? null, restoreVsColdBoot: ratio, fasterRamMode: best } };
  },
};
