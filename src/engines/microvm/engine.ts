// The heavy tier on a microVM, host side: each sandbox is a VM restored from the base snapshot
// (booted once per spec), refreshed with its own entropy and clock, and driven through the same
// guest agent and protocol as the gVisor backend. Commands and runCode get host-enforced wall
// clocks (interrupt or kill in the guest first, the whole VM killed when the guest does not
// answer) and output caps; a cgroup OOM of the VMM ends the sandbox with MemoryLimitError.
// `snapshot()` saves the live VM (it keeps running); each restore is an independent VM.
import { randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { AbortedError, FileSystemError, OutputLimitError, TimeoutError, WorkerCrashedError } from "../../errors.js";
import type { Limits } from "../../policy/options.js";
import type { AgentRequest } from "../../protocol/agent.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { Engine, EngineExecOptions, EngineExecResult, EngineRunOptions, EngineRunResult, EngineSnapshot } from "../engine.js";
import type { OutputListener } from "../heavy/agent-client.js";
import { poolFor } from "../pools.js";
import { detectAccel, type AccelChoice } from "./accel.js";
import { buildMicrovmArtefacts, findMicrovmArtefacts, requireMicrovmArtefacts } from "./artefacts.js";
import { findImage } from "../heavy/image.js";
import type { Accel, Hypervisor, SavedState, VmSpec } from "./hypervisor.js";
import { QemuHypervisor, qemuBinary, qemuUnavailableReason } from "./qemu.js";
import { baseRamMode, baseSnapshot, dropBaseSnapshot } from "./snapshots.js";
import { MicroVm } from "./vm.js";

export interface MicrovmEngineConfig {
  limits: Limits;
  env: Record<string, string>;
  /** Seeds Python's `random` in runCode. */
  seed: number | null;
  /** Extra Debian packages: selects the image (and artefacts) built with them. */
  packages: string[];
}

/** What the sandbox reports about its backend. */
export interface MicrovmInfo {
  backend: "microvm";
  hypervisor: string;
  accel: Accel;
  /** Why KVM is not used, when it is not. */
  accelReason?: string;
}

/** Time the guest gets to answer a kill before the host ends the whole VM. */
const GUEST_ANSWER_MS = 2000;
const hypervisor: Hypervisor = new QemuHypervisor();
let warnedTcg = false;

/** The VM spec for a sandbox's limits (finds the artefacts, detects the accelerator). */
export async function microvmSpec(config: Pick<MicrovmEngineConfig, "limits" | "packages">): Promise<{ spec: VmSpec; accel: AccelChoice }> {
  qemuBinary();
  // With the image built, the kernel and disk are made on first use (seconds; cached after).
  const artefacts = findMicrovmArtefacts(config.packages) ?? (findImage(config.packages) ? await buildMicrovmArtefacts({ packages: config.packages }) : requireMicrovmArtefacts(config.packages));
  const accel = await detectAccel(artefacts);
  const { limits } = config;
  const vcpus = Math.max(1, Math.min(Math.ceil(limits.cpus), os.availableParallelism()));
  return { spec: { artefacts, accel: accel.accel, memoryMb: limits.memoryMb, vcpus, cpus: limits.cpus, diskMb: limits.diskMb }, accel };
}

function specKey(spec: VmSpec): string {
  return `microvm:${spec.artefacts.id}:${spec.accel}:${spec.memoryMb}:${spec.vcpus}:${spec.cpus}:${spec.diskMb}`;
}

/** Restore a VM from the spec's base snapshot (built on first use); a broken snapshot is rebuilt once. */
async function restoreBase(spec: VmSpec): Promise<MicroVm> {
  const base = await baseSnapshot(hypervisor, spec);
  try {
    return await MicroVm.restore(hypervisor, spec, base);
  } catch (e) {
    if (!(e instanceof WorkerCrashedError) || !/restor/i.test(e.message)) throw e;
    dropBaseSnapshot(base);
    return MicroVm.restore(hypervisor, spec, await baseSnapshot(hypervisor, spec));
  }
}

export class MicrovmEngine implements Engine {
  private closed: string | undefined;

  private constructor(
    private readonly vm: MicroVm,
    private readonly config: MicrovmEngineConfig,
    readonly info: MicrovmInfo,
  ) {
    vm.onDeath = (e) => {
      this.closed ??= e.message;
    };
  }

  /** Take a ready VM from the pool when there is one, else restore one; then configure it. */
  static async start(config: MicrovmEngineConfig, pooled: boolean): Promise<MicrovmEngine> {
    const { spec, accel } = await microvmSpec(config);
    if (accel.accel === "tcg" && !warnedTcg) {
      warnedTcg = true;
      process.emitWarning(`the microVM backend runs under software emulation (TCG), which is slow: ${accel.reason ?? "KVM unavailable"}`, { code: "AGENTBOX_MICROVM_TCG" });
    }
    const pool = pooled ? poolFor(specKey(spec), () => restoreBase(spec)) : undefined;
    const vm = pool?.take() ?? (await restoreBase(spec));
    return MicrovmEngine.adopt(vm, config, accel);
  }

  /** Refresh a restored VM's entropy and clock, configure it for this sandbox, and wrap it. @internal */
  static async adopt(vm: MicroVm, config: MicrovmEngineConfig, accel: AccelChoice): Promise<MicrovmEngine> {
    vm.ref();
    const info: MicrovmInfo = { backend: "microvm", hypervisor: hypervisor.name, accel: accel.accel };
    if (accel.reason) info.accelReason = accel.reason;
    const engine = new MicrovmEngine(vm, config, info);
    try {
      await vm.refresh();
      // Clones must not share the REPL's random state either.
      const seed = config.seed ?? randomInt(0, 2 ** 48 - 1);
      await engine.call({ type: "configure", id: vm.client.newId(), env: config.env, seed });
    } catch (e) {
      await engine.dispose("start failed");
      throw e;
    }
    return engine;
  }

  get closedReason(): string | undefined {
    return this.closed ?? (this.vm.alive ? undefined : (this.vm.failure?.message ?? "the VM stopped"));
  }

  get pid(): number | undefined {
    return this.vm.pid;
  }

  /** The VM's private directory and cgroup directories (for tests that check nothing is left). */
  get resources(): { dir: string; cgroupDirs: string[]; pid: number | undefined } {
    const cg = (this.vm.process as { cgroup?: { existing(): string[] } }).cgroup;
    return { dir: this.vm.dir, cgroupDirs: cg?.existing() ?? [], pid: this.vm.pid };
  }

  /** The VMM process's resident memory, bytes. */
  rssBytes(): number {
    return this.vm.process.rssBytes();
  }

  async exec(argv: string[], opts: EngineExecOptions): Promise<EngineExecResult> {
    const { limits } = this.config;
    const c = this.vm.client;
    const id = c.newId();
    const out = new OutputCollector(limits.outputBytes, opts.onStdout, opts.onStderr);
    const t0 = performance.now();
    let stopped: Error | undefined;
    let hardTimer: NodeJS.Timeout | undefined;
    const stop = (err: Error) => {
      if (stopped) return;
      stopped = err;
      c.send({ type: "kill", id: c.newId(), target: id, signal: "KILL" });
      hardTimer = setTimeout(() => void this.fail(err), GUEST_ANSWER_MS);
    };
    const timer = setTimeout(() => stop(new TimeoutError(opts.timeoutMs, "the command was killed; the sandbox lives on")), opts.timeoutMs);
    const onAbort = () => stop(new AbortedError("command aborted by the caller's signal; it was killed"));
    if (opts.signal?.aborted) throw new AbortedError();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    out.onLimit = () => stop(new OutputLimitError(limits.outputBytes, "the command was killed; the sandbox lives on"));
    try {
      const req: AgentRequest = { type: "exec", id, argv };
      if (opts.cwd !== undefined) req.cwd = opts.cwd;
      if (opts.env !== undefined) req.env = opts.env;
      if (opts.stdin !== undefined) req.stdin = Buffer.from(opts.stdin).toString("base64");
      const m = await this.call(req, out.listener);
      if (stopped) throw stopped;
      if (m.type !== "exit") throw new WorkerCrashedError("the guest agent answered a command with the wrong message");
      const { stdout, stderr } = out.finish();
      if (m.error && m.exitCode === 127) return { exitCode: 127, stdout, stderr: stderr + `agentbox: cannot run ${argv[0] ?? ""}: ${m.error}\n`, signal: null, durationMs: performance.now() - t0 };
      return { exitCode: m.exitCode, stdout, stderr, signal: m.signal, durationMs: performance.now() - t0 };
    } finally {
      clearTimeout(timer);
      clearTimeout(hardTimer);
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  async run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    const { limits } = this.config;
    const c = this.vm.client;
    const id = c.newId();
    const out = new OutputCollector(limits.outputBytes, opts.onStdout, opts.onStderr);
    let reason: "timeout" | "abort" | "output" | undefined;
    const timers: NodeJS.Timeout[] = [];
    const interrupt = (why: "timeout" | "abort" | "output") => {
      if (reason) return;
      reason = why;
      c.send({ type: "interrupt", id: c.newId(), target: id, hard: false });
      timers.push(setTimeout(() => c.send({ type: "interrupt", id: c.newId(), target: id, hard: true }), limits.graceMs));
      timers.push(setTimeout(() => void this.fail(this.limitError(why, opts.timeoutMs, "the guest did not answer and the VM was killed")), limits.graceMs + GUEST_ANSWER_MS));
    };
    timers.push(setTimeout(() => interrupt("timeout"), opts.timeoutMs));
    const onAbort = () => interrupt("abort");
    if (opts.signal?.aborted) throw new AbortedError();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    out.onLimit = () => interrupt("output");
    try {
      const m = await this.call({ type: "run", id, code, valueCap: limits.outputBytes }, out.listener);
      if (m.type !== "result") throw new WorkerCrashedError("the guest agent answered a run with the wrong message");
      if (m.restarted && reason) throw this.limitError(reason, opts.timeoutMs, "the run ignored the interrupt; the Python REPL was restarted (its variables are lost), the sandbox lives on");
      const { stdout, stderr } = out.finish();
      let value = m.value;
      let limitHit: EngineRunResult["limitHit"] = reason === "timeout" ? "timeoutMs" : reason === "output" ? "outputBytes" : null;
      if (value !== null && out.bytes + Buffer.byteLength(value) > limits.outputBytes) {
        value = Buffer.from(value).subarray(0, Math.max(0, limits.outputBytes - out.bytes)).toString("utf8");
        limitHit = "outputBytes";
      }
      if (reason === "abort") throw new AbortedError();
      return { stdout, stderr, value, error: m.error, limitHit, durationMs: m.durationMs, vfsDigest: "" };
    } finally {
      for (const t of timers) clearTimeout(t);
      opts.signal?.removeEventListener("abort", onAbort);
    }
  }

  async writeFile(p: string, data: Uint8Array): Promise<void> {
    await this.fs({ op: "write", path: p, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64") });
  }

  async readFile(p: string): Promise<Uint8Array> {
    const r = await this.fs({ op: "read", path: p });
    return new Uint8Array(Buffer.from(r.data ?? "", "base64"));
  }

  async list(p: string): Promise<DirEntry[]> {
    const entries = (await this.fs({ op: "list", path: p })).entries ?? [];
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)); // never trust the guest's order
  }

  async remove(p: string): Promise<void> {
    await this.fs({ op: "remove", path: p });
  }

  async exists(p: string): Promise<boolean> {
    return (await this.fs({ op: "exists", path: p })).exists ?? false;
  }

  async makeDir(p: string): Promise<void> {
    await this.fs({ op: "mkdir", path: p });
  }

  /** Save the live VM (RAM streamed into the state file); the sandbox keeps running. */
  async snapshot(): Promise<EngineSnapshot> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "agentbox-vmsnap-"));
    try {
      await this.vm.dispatch({ type: "snapshot", into: { dir, ram: "streamed" }, then: "resume" });
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      this.closed ??= `snapshot failed: ${(e as Error).message}`;
      throw e;
    }
    return new MicrovmSnapshot({ dir, ram: "streamed" }, this.vm.spec, this.config, { accel: this.info.accel, ...(this.info.accelReason ? { reason: this.info.accelReason } : {}) });
  }

  async dispose(reason = "killed"): Promise<void> {
    this.closed ??= reason;
    await this.vm.stop(new WorkerCrashedError(`sandbox closed: ${reason}`));
  }

  private limitError(reason: "timeout" | "abort" | "output", timeoutMs: number, detail: string): Error {
    if (reason === "timeout") return new TimeoutError(timeoutMs, detail);
    if (reason === "output") return new OutputLimitError(this.config.limits.outputBytes, detail);
    return new AbortedError(`run aborted by the caller's signal; ${detail}`);
  }

  /** End the VM because it stopped answering; pending requests fail with `err`. */
  private async fail(err: Error): Promise<void> {
    this.closed ??= err.message;
    this.vm.client.fail(err);
    await this.vm.stop(err);
  }

  private async fs(req: Omit<Extract<AgentRequest, { type: "fs" }>, "type" | "id">) {
    const m = await this.call({ type: "fs", id: this.vm.client.newId(), ...req });
    if (m.type !== "reply") throw new WorkerCrashedError("the guest agent answered a file operation with the wrong message");
    if (!m.ok) throw new FileSystemError(req.path, m.errno ?? "EIO", m.message ?? "file system error");
    return m;
  }

  /** A request whose failure, when the VM died, reports why it died (e.g. MemoryLimitError). */
  private async call(msg: AgentRequest, onOutput?: OutputListener) {
    try {
      return await this.vm.dispatch({ type: "request", msg, onOutput });
    } catch (e) {
      if (!this.vm.failure) await Promise.race([this.vm.exited$(), new Promise((r) => setTimeout(r, 1500))]);
      const why = this.vm.failure ?? (e as Error);
      this.closed ??= why.message;
      void this.vm.stop(why);
      throw why;
    }
  }
}

class MicrovmSnapshot implements EngineSnapshot {
  private removed = false;
  constructor(
    private readonly state: SavedState,
    private readonly spec: VmSpec,
    private readonly config: MicrovmEngineConfig,
    private readonly accel: AccelChoice,
  ) {}

  async restore(): Promise<Engine> {
    if (this.removed) throw new WorkerCrashedError("this snapshot was removed");
    const vm = await MicroVm.restore(hypervisor, this.spec, this.state);
    return MicrovmEngine.adopt(vm, { ...this.config, seed: null }, this.accel);
  }

  async remove(): Promise<void> {
    this.removed = true;
    fs.rmSync(this.state.dir, { recursive: true, force: true });
  }
}

/** Streams a command's output to the caller while counting it against limits.outputBytes. */
class OutputCollector {
  bytes = 0;
  onLimit: (() => void) | undefined;
  private readonly parts = { stdout: [] as string[], stderr: [] as string[] };
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  private hit = false;

  constructor(
    private readonly cap: number,
    private readonly onStdout: ((s: string) => void) | undefined,
    private readonly onStderr: ((s: string) => void) | undefined,
  ) {}

  readonly listener = (stream: "stdout" | "stderr", data: Buffer): void => {
    if (this.hit) return;
    let chunk = data;
    if (this.bytes + chunk.length > this.cap) {
      chunk = chunk.subarray(0, this.cap - this.bytes);
      this.hit = true;
    }
    this.bytes += chunk.length;
    const text = this.decoders[stream].decode(chunk, { stream: true });
    if (text) {
      this.parts[stream].push(text);
      (stream === "stdout" ? this.onStdout : this.onStderr)?.(text);
    }
    if (this.hit) this.onLimit?.();
  };

  finish(): { stdout: string; stderr: string } {
    for (const s of ["stdout", "stderr"] as const) {
      const tail = this.decoders[s].decode();
      if (tail) this.parts[s].push(tail);
    }
    return { stdout: this.parts.stdout.join(""), stderr: this.parts.stderr.join("") };
  }
}

export { baseRamMode };

/** For backend "auto": true when this image's microVM artefacts are built and KVM boots them. */
export async function microvmOnKvm(packages: string[]): Promise<boolean> {
  if (qemuUnavailableReason() || process.env.AGENTBOX_MICROVM_ACCEL === "tcg") return false;
  const artefacts = findMicrovmArtefacts(packages);
  if (!artefacts) return false;
  return (await detectAccel(artefacts)).accel === "kvm";
}
