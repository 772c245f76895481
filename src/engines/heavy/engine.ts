// The heavy tier's one engine: an agent session (commands, runCode, files with host clocks and
// output caps: agent-session.ts) over whichever backend runs the guest (backend.ts). It configures
// each sandbox's agent (env, seed, the backend's agent-side limits), names a dead sandbox's error
// as its backend does, and turns a backend's checkpoints into engine snapshots. Backends are
// started by their own folders (heavy-gvisor/, microvm/), which hand a live backend to `start`.
import { randomInt } from "node:crypto";
import { PortConnectError, SandboxClosedError, SnapshotRemovedError, TierUnavailableError, WorkerCrashedError } from "../../errors.js";
import type { NetworkGrant } from "../../policy/network.js";
import type { SecretSet } from "../../policy/secrets.js";
import type { HeavyLimits as Limits } from "../../policy/options.js";
import type { AgentRequest } from "../../protocol/agent.js";
import type { DirEntry } from "../../protocol/messages.js";
import type { Engine, EngineExecOptions, EngineExecResult, EngineInfo, EngineNetwork, EnginePorts, EngineProcess, EngineRestoreOptions, EngineRunOptions, EngineRunResult, EngineSnapshot, EngineSpawnOptions } from "../engine.js";
import type { OutputListener } from "./agent-client.js";
import type { AgentStream } from "./streams.js";
import { AgentSession } from "./agent-session.js";
import { caEnv, EgressProxy, PROXY_PORT, proxyEnv } from "./egress.js";
import type { HeavyBackend, HeavySavedState } from "./backend.js";
import { PortForwarder } from "./ports.js";

/** What the heavy engine needs besides its backend. */
export interface HeavySessionConfig {
  limits: Limits;
  env: Record<string, string>;
  /** Seeds Python's `random` in runCode (the heavy tier has no virtual clock or seeded kernel). */
  seed: number | null;
  /** Egress through the host's proxy (egress.ts), limited by this grant. Default: no network. */
  network?: NetworkGrant | undefined;
  /** The grant's secrets (placeholders for the guest's env, values for the proxy alone). */
  secrets?: SecretSet | undefined;
}

/** How long a failed request waits for the sandbox's end to learn why it died (OOM count, exit). */
const DEATH_CAUSE_WAIT_MS = 1500;

export class HeavyEngine<R = unknown> implements Engine {
  private closed: string | undefined;
  private readonly session: AgentSession;
  /** The sandbox's egress proxy, when its grant gives it network. */
  private readonly egress: EgressProxy | undefined;
  /** The guest ports exposed on the host; closed with the sandbox. */
  private readonly forwarder: PortForwarder;

  private constructor(
    private backend: HeavyBackend<R>,
    private readonly config: HeavySessionConfig,
  ) {
    const live = () => this.backend; // a checkpoint may swap the backend
    this.session = new AgentSession({ get client() { return live().client; }, call: (m, o) => this.call(m, o), fail: (e) => this.fail(e) }, config.limits, backend.noun);
    this.egress = config.network ? new EgressProxy(config.network, { secrets: config.secrets }) : undefined;
    this.forwarder = new PortForwarder((port) => this.connectPort(port));
    this.watch(backend);
  }

  /** Wrap a started (or restored) backend and configure its agent for this sandbox. */
  static async start<R>(backend: HeavyBackend<R>, config: HeavySessionConfig): Promise<HeavyEngine<R>> {
    backend.ref();
    const engine = new HeavyEngine(backend, config);
    try {
      await backend.prepare?.();
      // Clones must not share the REPL's random state.
      const seed = config.seed ?? (backend.cloned ? randomInt(0, 2 ** 48 - 1) : null);
      // With network, the agent's proxy listens and HTTP clients are pointed at it; the caller's env
      // wins, except over secrets' placeholders (checked at create: no env entry names a secret).
      // With secrets, the agent also writes the CA bundle that makes TLS clients trust interception.
      const ca = engine.egress?.ca;
      const secretEnv = config.secrets?.placeholders() ?? {};
      const net = config.network
        ? { env: { ...proxyEnv(), ...(ca ? caEnv() : {}), ...config.env, ...secretEnv }, proxyPort: PROXY_PORT, ...(ca ? { caPem: ca.caPem } : {}) }
        : { env: config.env };
      await engine.call({ type: "configure", id: backend.client.newId(), seed, ...backend.agentConfig, ...net });
    } catch (e) {
      await engine.dispose("start failed");
      throw e;
    }
    return engine;
  }

  /** The record of the guest's network attempts, when it has network. */
  get network(): EngineNetwork | undefined {
    return this.egress?.log;
  }

  get ports(): EnginePorts {
    return this.forwarder;
  }

  get info(): EngineInfo {
    return this.backend.info;
  }

  get closedReason(): string | undefined {
    return this.closed ?? this.backend.endedReason;
  }

  get pid(): number | undefined {
    return this.backend.pid;
  }

  /** The host resources the sandbox holds (for tests that check nothing is left behind). */
  get resources(): R {
    return this.backend.resources;
  }

  /** Resident memory of what runs the sandbox, bytes (0 when the backend cannot tell). */
  rssBytes(): number {
    return this.backend.rssBytes?.() ?? 0;
  }

  exec(argv: string[], opts: EngineExecOptions): Promise<EngineExecResult> {
    return this.session.exec(argv, opts);
  }

  spawn(argv: string[], opts: EngineSpawnOptions): Promise<EngineProcess> {
    return this.session.spawn(argv, opts);
  }

  run(code: string, opts: EngineRunOptions): Promise<EngineRunResult> {
    return this.session.run(code, opts);
  }

  writeFile(p: string, data: Uint8Array): Promise<void> {
    return this.session.writeFile(p, data);
  }

  readFile(p: string): Promise<Uint8Array> {
    return this.session.readFile(p);
  }

  list(p: string): Promise<DirEntry[]> {
    return this.session.list(p);
  }

  remove(p: string): Promise<void> {
    return this.session.remove(p);
  }

  exists(p: string): Promise<boolean> {
    return this.session.exists(p);
  }

  makeDir(p: string): Promise<void> {
    return this.session.makeDir(p);
  }

  /** Save the whole sandbox; it keeps running. Each restore is an independent sandbox. */
  async snapshot(opts: { final?: boolean } = {}): Promise<EngineSnapshot> {
    try {
      const { saved, next } = await this.backend.checkpoint(opts);
      if (next) {
        this.backend = next;
        this.watch(next);
      }
      return new HeavySnapshot(saved, this.config);
    } catch (e) {
      this.closed ??= `snapshot failed: ${(e as Error).message}`;
      throw e;
    }
  }

  async dispose(reason = "killed"): Promise<void> {
    this.closed ??= reason;
    this.egress?.close();
    await this.forwarder.closeAll(this.closed);
    await this.backend.dispose(new WorkerCrashedError(`sandbox closed: ${reason}`));
  }

  private watch(backend: HeavyBackend<R>): void {
    backend.onDeath = (e) => {
      this.closed ??= e.message;
      this.egress?.close();
      void this.forwarder.closeAll(this.closed);
    };
    const egress = this.egress;
    backend.client.streams.onOpen = egress ? (s) => egress.accept(s) : undefined;
  }

  /** A stream to guest `port` on the live backend's channel (a checkpoint may have swapped it). */
  private async connectPort(port: number): Promise<AgentStream> {
    if (this.closedReason !== undefined) throw new SandboxClosedError(this.closedReason);
    try {
      return await this.backend.client.streams.connect(port);
    } catch (e) {
      if (this.closedReason !== undefined) throw new SandboxClosedError(this.closedReason);
      throw new PortConnectError(port, (e as Error).message.replace(/^guest side of the stream failed: /, ""));
    }
  }

  /** End the sandbox because it stopped answering; pending requests fail with `err`. */
  private async fail(err: Error): Promise<void> {
    this.closed ??= err.message;
    this.backend.client.fail(err);
    await this.backend.dispose(err);
  }

  /** A request whose failure, when the sandbox died, reports why it died (e.g. MemoryLimitError). */
  private async call(msg: AgentRequest, onOutput?: OutputListener) {
    const backend = this.backend;
    try {
      return await backend.request(msg, onOutput);
    } catch (e) {
      // Wait for the death's cause (OOM count, the VMM's exit) before reporting.
      if (!backend.failure) await Promise.race([backend.exited(), new Promise((r) => setTimeout(r, DEATH_CAUSE_WAIT_MS))]);
      const why = backend.failure ?? (e as Error);
      this.closed ??= why.message;
      void backend.dispose(why);
      throw why;
    }
  }
}

/** An engine snapshot of a backend's saved state read back from disk (the backend's own loader made `saved`). */
export function heavySnapshot<R>(saved: HeavySavedState<R>, config: HeavySessionConfig): EngineSnapshot {
  return new HeavySnapshot(saved, config);
}

class HeavySnapshot<R> implements EngineSnapshot {
  private removed = false;
  constructor(
    private readonly saved: HeavySavedState<R>,
    private readonly config: HeavySessionConfig,
  ) {}

  /** A new sandbox from the checkpoint; `seed` (a fork's own) seeds its `random` in place of the sandbox's. */
  async restore(opts: EngineRestoreOptions = {}): Promise<Engine> {
    if (this.removed) throw new SnapshotRemovedError();
    return HeavyEngine.start(await this.saved.restore(), opts.seed === undefined ? this.config : { ...this.config, seed: opts.seed });
  }

  async remove(): Promise<void> {
    this.removed = true;
    await this.saved.remove();
  }

  async persist(dir: string): Promise<unknown> {
    if (this.removed) throw new SnapshotRemovedError();
    if (!this.saved.persist) throw new TierUnavailableError("this heavy backend's saved state cannot be written to disk");
    return this.saved.persist(dir);
  }

  sizeBytes(): number {
    return this.removed ? 0 : (this.saved.sizeBytes?.() ?? 0);
  }
}
