// The public result of one runCode call.
import type { LimitName } from "../errors.js";
import type { DisplayResult } from "../protocol/display.js";
import type { GuestError } from "../protocol/messages.js";

export type { DisplayResult, MimeType } from "../protocol/display.js";

export interface RunResult {
  stdout: string;
  stderr: string;
  /** repr() of the trailing expression, when there is one and it is not None. */
  value?: string;
  /**
   * Rich results (Jupyter-style MIME bundles) in the order they happened: each `display()` call,
   * then the final expression's bundle (`main: true`) when it has one. Present only when non-empty.
   * Their bytes count against `limits.outputBytes`; a result that does not fit is dropped.
   */
  results?: DisplayResult[];
  /** The guest's exception: a result, not a host error. */
  error?: GuestError;
  /** 0 when the code ran to the end, 1 when it raised. */
  exitCode: 0 | 1;
  /** Time spent running inside the worker. */
  durationMs: number;
  /** Set when a limit stopped or trimmed this run while the sandbox lived on. */
  limitHit?: LimitName;
  /** SHA-256 of the sandbox file system after the run (paths, types, modes, contents). */
  vfsDigest: string;
  /** The sandbox's seed: pass it to Sandbox.create to reproduce this run. */
  seed: number;
  /** The tier that ran it: the sandbox's own, or for tier "auto" the one it ran on then. */
  tier: "nano" | "heavy";
}
