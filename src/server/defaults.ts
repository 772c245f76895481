// The server's and cluster mode's defaults, apart from the code that uses them: the CLI's help
// shows them without loading the server (a one-shot `agentbox run` imports neither).

/** Defaults of startServer() (and so of `agentbox serve`, whose help shows them). */
export const SERVER_DEFAULTS = {
  host: "127.0.0.1",
  port: 8787,
  maxSandboxes: 16,
  maxHeavySandboxes: 8,
  maxQueue: 256,
  queueTimeoutMs: 30_000,
  poolMin: 2,
  poolMax: 8,
  poolMemoryBudgetMb: 1024,
  poolIdleShrinkMs: 30_000,
  maxJsonBytes: 4 * 1024 * 1024,
  maxUploadBytes: 64 * 1024 * 1024,
  snapshotTtlMs: 24 * 3600_000,
} as const;

/** How long a gone node's running sandboxes answer 410 before their records are removed. */
export const SWEEP_DEFAULTS = { retentionMs: 60 * 60 * 1000 } as const;

export const CLUSTER_DEFAULTS = { leaseTtlMs: 10_000, prefix: "/agentbox/", goneRetentionMs: SWEEP_DEFAULTS.retentionMs } as const;
