import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as api from "../../src/index.js";
import { FileSystemQuotaError, MemoryLimitError, OutputLimitError, TimeoutError } from "../../src/errors.js";

describe("public API", () => {
  it("exports exactly the documented names", () => {
    assert.deepEqual(Object.keys(api).sort(), [
      "AbortedError",
      "AgentboxError",
      "CommandHandle",
      "FileSystemError",
      "FileSystemQuotaError",
      "HEAVY_BACKENDS",
      "IMAGE_PRESETS",
      "IMAGE_PRESET_NAMES",
      "ImageBuildError",
      "InvalidOptionsError",
      "LANGUAGES",
      "LimitError",
      "MemoryLimitError",
      "OutputLimitError",
      "PortConnectError",
      "ProtocolError",
      "ReplayError",
      "Sandbox",
      "SandboxClosedError",
      "SandboxCommands",
      "SandboxFiles",
      "SandboxNetwork",
      "SandboxPorts",
      "SandboxSnapshot",
      "SavedStateError",
      "SnapshotRemovedError",
      "TIERS",
      "TierUnavailableError",
      "TimeoutError",
      "WorkerCrashedError",
      "buildImage",
      "buildMicrovmArtefacts",
      "imageLabel",
      "listImages",
      "removeImage",
      "resolveSandboxOptions",
      "sandboxOptionsForTier",
    ]);
  });

  it("limit errors carry the limit, its value and a message naming the option", () => {
    const cases = [
      [new TimeoutError(500), "timeoutMs", 500, "TIMEOUT"],
      [new MemoryLimitError(128), "memoryMb", 128, "MEMORY_LIMIT"],
      [new OutputLimitError(1000), "outputBytes", 1000, "OUTPUT_LIMIT"],
      [new FileSystemQuotaError("vfsFiles", 10, "/a"), "vfsFiles", 10, "FS_QUOTA"],
    ] as const;
    for (const [err, limit, value, code] of cases) {
      assert.ok(err instanceof api.AgentboxError && err instanceof api.LimitError);
      assert.equal(err.limit, limit);
      assert.equal(err.value, value);
      assert.equal(err.code, code);
      assert.match(err.message, new RegExp(`limits\\.${limit}`));
      assert.equal(err.name, err.constructor.name);
    }
  });
});
