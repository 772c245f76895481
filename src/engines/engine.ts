// The one interface every engine (tier × language) implements. The Sandbox façade drives an
// Engine without knowing which one it is; engines never import the façade or each other.
import type { LimitName } from "../errors.js";
import type { DirEntry, GuestError } from "../protocol/messages.js";

export interface EngineRunOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  onStdout?: ((chunk: string) => void) | undefined;
  onStderr?: ((chunk: string) => void) | undefined;
}

export interface EngineRunResult {
  stdout: string;
  stderr: string;
  value: string | null;
  error: GuestError | null;
  limitHit: LimitName | null;
  durationMs: number;
  vfsDigest: string;
}

export interface Engine {
  /** Why the engine can no longer be used, or undefined while it can. */
  readonly closedReason: string | undefined;
  /** OS process id of the engine's worker, when it has one. */
  readonly pid: number | undefined;
  run(code: string, opts: EngineRunOptions): Promise<EngineRunResult>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
  readFile(path: string): Promise<Uint8Array>;
  list(path: string): Promise<DirEntry[]>;
  remove(path: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  makeDir(path: string): Promise<void>;
  /** Ends the engine and everything it started. Idempotent. */
  dispose(reason?: string): Promise<void>;
}
