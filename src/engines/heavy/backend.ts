// The seam of the heavy tier: what one backend (gVisor box, microVM, ...) supplies to the one heavy
// engine (heavy/engine.ts). A backend owns one live sandbox: the channel to its guest agent, how it
// saves itself and is restored, how it ends, what it reports, and how its death is named (e.g.
// MemoryLimitError when its cgroup ran out). Everything else — commands, runCode, files, wall
// clocks, output caps, configuring the agent — is the engine's, written once for every backend.
import type { AgentRequest } from "../../protocol/agent.js";
import type { EngineInfo } from "../engine.js";
import type { AgentClient, OutputListener } from "./agent-client.js";
import type { AgentFinal } from "./agent-session.js";

/** What the agent's configure message carries besides env and seed (backend-specific limits). */
export type AgentConfigExtras = Omit<Partial<Extract<AgentRequest, { type: "configure" }>>, "type" | "id" | "env" | "seed">;

/** One live sandbox of a backend. `R` is what it reports to tests and leak checks (JSON-safe). */
export interface HeavyBackend<R = unknown> {
  /** What the sandbox reports as `Engine.info`. */
  readonly info: EngineInfo;
  /** What the sandbox is called in messages ("sandbox", "VM"). */
  readonly noun: string;
  /** The channel to the guest agent. */
  readonly client: AgentClient;
  /** OS process id of what runs the sandbox (runsc, the VMM). */
  readonly pid: number | undefined;
  /** Host resources the sandbox holds, for tests that check nothing is left behind. */
  readonly resources: R;
  /**
   * True when the sandbox was restored from a saved state others may start from too (a checkpoint,
   * a base snapshot): its REPL's random state is shared, so the engine seeds it afresh.
   */
  readonly cloned: boolean;
  /** Limits the guest agent enforces itself, sent in its configure message. */
  readonly agentConfig: AgentConfigExtras;
  /** Why the sandbox is no longer usable (its own end), or undefined while it is. */
  readonly endedReason: string | undefined;
  /** Why the sandbox died, named for the caller (e.g. MemoryLimitError), once it has. */
  readonly failure: Error | undefined;
  /** Called once when the sandbox dies on its own, with `failure`. Set by the engine. */
  onDeath: ((e: Error) => void) | undefined;
  /** Send one request to the agent and wait for its final answer. */
  request(msg: AgentRequest, onOutput?: OutputListener): Promise<AgentFinal>;
  /** Resolves once the sandbox's process has ended (or its disposal is under way). */
  exited(): Promise<void>;
  /** Make a started or restored sandbox ready for a new session (microVM: fresh entropy, clock). */
  prepare?(): Promise<void>;
  /**
   * Save the whole sandbox; it carries on. A backend whose save stops the sandbox (`runsc
   * checkpoint`) restores it from what it saved and returns that as `next`, to be used from then on.
   */
  checkpoint(opts?: { final?: boolean }): Promise<{ saved: HeavySavedState<R>; next?: HeavyBackend<R> }>;
  /** The VMM's or sandbox's resident memory, bytes (0 when unknown). */
  rssBytes?(): number;
  /** Hold the event loop open while the sandbox is in use (pooled sandboxes are unref'd). */
  ref(): void;
  /** End the sandbox and everything it holds on the host. Idempotent. */
  dispose(reason: Error): Promise<void>;
}

/** A saved sandbox: any number of independent sandboxes restore from it. */
export interface HeavySavedState<R = unknown> {
  restore(): Promise<HeavyBackend<R>>;
  /** Delete the saved state. Idempotent. */
  remove(): Promise<void>;
  /** Move the saved state into `dir` and describe it (relative paths); see EngineSnapshot.persist. */
  persist?(dir: string): Promise<unknown>;
  /** Bytes the saved state takes on disk. */
  sizeBytes?(): number;
}
