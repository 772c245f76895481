// agentbox: the public API. Re-exports only; everything else is internal.
export { Sandbox, SandboxFiles, SandboxCommands, CommandHandle, SandboxNetwork, SandboxPorts, SandboxSnapshot } from "./sandbox/sandbox.js";
export type { CommandResult, CommandInfo, ExposedPort, SandboxInfo } from "./sandbox/sandbox.js";
export { buildImage, imageLabel, listImages, removeImage, buildMicrovmArtefacts, IMAGE_PRESETS, IMAGE_PRESET_NAMES } from "./engines/images.js";
export type { ImageInfo, ImageBuildOptions, ImagePreset, MicrovmArtefacts, MicrovmBuildOptions } from "./engines/images.js";
export { TIERS, LANGUAGES, HEAVY_BACKENDS } from "./engines/catalog.js";
export { resolveSandboxOptions, sandboxOptionsForTier } from "./sandbox/resolve.js";
export type { SandboxOptionsInput as SandboxOptions, SandboxOptions as ResolvedOptions, ResolvedSandboxOptions, Language } from "./sandbox/resolve.js";
export type { DisplayResult, MimeType, RunResult } from "./sandbox/result.js";
export type { RunOptionsInput as RunOptions, CommandOptionsInput as CommandOptions, LimitsInput as Limits, MountInput as Mount, PoolOptionsInput as PoolOptions, ForkOptionsInput as ForkOptions, GivenFields, Tier } from "./policy/options.js";
export type { DirEntry as EntryInfo, GuestError } from "./protocol/messages.js";
export type { NetworkLogEntry } from "./policy/network.js";
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
  SnapshotRemovedError,
  TierUnavailableError,
  WorkerCrashedError,
  ProtocolError,
  AbortedError,
  ImageBuildError,
  ReplayError,
  SavedStateError,
  PortConnectError,
} from "./errors.js";
export type { AgentboxErrorCode, LimitName, PartialResult } from "./errors.js";
