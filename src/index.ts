// agentbox: the public API. Re-exports only; everything else is internal.
export { Sandbox, SandboxFiles, SandboxCommands, SandboxSnapshot } from "./sandbox/sandbox.js";
export type { CommandResult, SandboxInfo } from "./sandbox/sandbox.js";
export { buildImage, listImages, removeImage } from "./engines/heavy/image.js";
export type { ImageInfo, BuildOptions as ImageBuildOptions } from "./engines/heavy/image.js";
export { buildMicrovmArtefacts } from "./engines/microvm/artefacts.js";
export type { MicrovmArtefacts, MicrovmBuildOptions } from "./engines/microvm/artefacts.js";
export type { RunResult } from "./sandbox/result.js";
export type { SandboxOptionsInput as SandboxOptions, RunOptionsInput as RunOptions, CommandOptionsInput as CommandOptions, LimitsInput as Limits, MountInput as Mount, PoolOptionsInput as PoolOptions } from "./policy/options.js";
export type { DirEntry as EntryInfo, GuestError } from "./protocol/messages.js";
export {
  AgentboxError,
  InvalidOptionsError,
  LimitError,
  TimeoutError,
  MemoryLimitError,
  OutputLimitError,
  FileSystemQuotaError,
  FileSystemError,
  SandboxClosedError,
  TierUnavailableError,
  WorkerCrashedError,
  ProtocolError,
  AbortedError,
  ImageBuildError,
} from "./errors.js";
export type { AgentboxErrorCode, LimitName, PartialResult } from "./errors.js";
