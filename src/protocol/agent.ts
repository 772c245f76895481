// Host↔guest-agent messages for the heavy tier (guest/agent.py), versioned by
// AGENT_PROTOCOL_VERSION and carried in the same length-prefixed JSON frames as the nano tier
// (protocol/frames.ts). Backend-neutral: gVisor carries them over the sandbox's stdio, a microVM
// over a virtio-serial port. The agent shares its sandbox with the code it runs, so every
// message from it is hostile input: checked against `agentMessageSchema`, sizes capped.
import { z } from "zod";
import { MAX_RESULTS } from "./display.js";
import { dirEntrySchema, guestErrorSchema, type FsOp } from "./messages.js";

export const AGENT_PROTOCOL_VERSION = 2;
/** Cap on one frame from the agent: a file read (base64) of up to 40 MiB must fit. */
export const AGENT_MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** Cap on one binary frame's data (a chunk of a byte stream), both ways. */
export const STREAM_CHUNK_BYTES = 256 * 1024;
/**
 * Bytes of one stream either side may send ahead of the other's acknowledgements: the most a
 * stream can have buffered at its receiver. A peer that sends past it breaks the protocol.
 */
export const STREAM_WINDOW_BYTES = 8 * 1024 * 1024;
/** Streams open at once over one channel (either side's). */
export const MAX_STREAMS = 1024;

/**
 * Control of the byte streams multiplexed over the channel (their data travels in binary frames,
 * protocol/frames.ts). Streams the host opens have even ids, the agent's odd ones.
 * - open (agent → host): a guest process connected to the agent's egress proxy (`kind` "proxy").
 * - connect (host → agent): connect stream `stream` to TCP `port` on the guest's loopback; the
 *   agent answers `opened`, or `close` with an error.
 * - ack: the receiver passed on `bytes` more of the stream's data (window credit).
 * - end: the sender will send no more data (half close).
 * - close: the stream is gone both ways (`error` says why, when it failed).
 */
export type StreamControl =
  | { type: "stream"; op: "open"; stream: number; kind: "proxy" }
  | { type: "stream"; op: "connect"; stream: number; port: number }
  | { type: "stream"; op: "opened"; stream: number }
  | { type: "stream"; op: "ack"; stream: number; bytes: number }
  | { type: "stream"; op: "end"; stream: number }
  | { type: "stream"; op: "close"; stream: number; error?: string };

export type AgentRequest =
  | { type: "ping"; id: number }
  /**
   * `processMemoryMb`: RLIMIT_AS of every guest process; `watchdogMemoryMb`: the sandbox memory use
   * past which the agent SIGKILLs the largest guest process (backends whose limit kills the whole sandbox).
   */
  /**
   * `proxyPort`: listen there on the guest's loopback and pass each connection to the host as a
   * stream. `caPem`: the sandbox's CA, to write beside the system's in the guest's CA bundle.
   */
  | { type: "configure"; id: number; env: Record<string, string>; seed: number | null; processMemoryMb?: number; watchdogMemoryMb?: number; proxyPort?: number; caPem?: string }
  /**
   * `background`: the agent answers `started` (with the guest pid) once the process runs, before its output.
   * `stdinOpen`: its stdin stays open for `stdin` requests (after `stdin`'s bytes, if given) until closed or it exits.
   */
  | { type: "exec"; id: number; argv: string[]; cwd?: string; env?: Record<string, string>; stdin?: string; background?: boolean; stdinOpen?: boolean }
  /** Write `data` (base64) to, or `close`, the open stdin of exec `target`; answered by a reply (errno ENOENT, EPIPE, EAGAIN). */
  | { type: "stdin"; id: number; target: number; data?: string; close?: boolean }
  | { type: "kill"; id: number; target: number; signal: "KILL" | "TERM" | "INT" }
  | { type: "run"; id: number; code: string; valueCap: number }
  /** Stop run `target`: SIGINT (KeyboardInterrupt) first; `hard` ends the REPL process. */
  | { type: "interrupt"; id: number; target: number; hard: boolean }
  | { type: "fs"; id: number; op: FsOp; path: string; data?: string };

const id = z.int().min(0).max(Number.MAX_SAFE_INTEGER);
const base64 = z.string().max(AGENT_MAX_FRAME_BYTES).regex(/^[A-Za-z0-9+/]*={0,2}$/);

const streamId = z.int().min(0).max(0xffffffff);
export const streamControlSchema = z.discriminatedUnion("op", [
  z.strictObject({ type: z.literal("stream"), op: z.literal("open"), stream: streamId, kind: z.literal("proxy") }),
  z.strictObject({ type: z.literal("stream"), op: z.literal("opened"), stream: streamId }),
  z.strictObject({ type: z.literal("stream"), op: z.literal("ack"), stream: streamId, bytes: z.int().min(1).max(STREAM_WINDOW_BYTES) }),
  z.strictObject({ type: z.literal("stream"), op: z.literal("end"), stream: streamId }),
  z.strictObject({ type: z.literal("stream"), op: z.literal("close"), stream: streamId, error: z.string().max(1024).optional() }),
]);

export const agentMessageSchema = z.discriminatedUnion("type", [
  streamControlSchema,
  z.strictObject({ type: z.literal("ready"), v: z.int(), agent: z.string().max(64), python: z.string().max(64) }),
  z.strictObject({ type: z.literal("pong"), id }),
  /** A background exec's process is running: its pid in the guest. Not final: output and `exit` follow. */
  z.strictObject({ type: z.literal("started"), id, pid: z.int().min(1).max(2 ** 31 - 1) }),
  z.strictObject({ type: z.literal("output"), id, stream: z.enum(["stdout", "stderr"]), data: base64.max(1024 * 1024) }),
  /**
   * One rich result of run `id` (a display() call, the final expression's bundle) as the REPL
   * made it. Its shape is checked by the host (agent-session.ts), not here: the REPL is the
   * guest's, and a malformed result it planted is dropped with a note, not a protocol error that
   * would end the sandbox. Its size is bounded by the frame cap and then by the output cap.
   */
  z.strictObject({ type: z.literal("display"), id, result: z.unknown() }),
  z.strictObject({
    type: z.literal("exit"),
    id,
    exitCode: z.int().min(0).max(512),
    signal: z.string().max(32).nullable(),
    error: z.string().max(4096).optional(),
    /** The command (or a process of its session) was killed for lack of memory in the guest. */
    oomKilled: z.boolean().optional(),
  }),
  z.strictObject({
    type: z.literal("result"),
    id,
    value: z.string().max(AGENT_MAX_FRAME_BYTES).nullable(),
    error: guestErrorSchema.nullable(),
    durationMs: z.number().min(0).max(1e10),
    restarted: z.boolean().optional(),
    /** The REPL was killed for lack of memory in the guest (its state is lost). */
    oomKilled: z.boolean().optional(),
    /** SHA-256 of the sandbox's writable tree after the run (/home/user, /tmp). */
    vfsDigest: z.string().regex(/^[0-9a-f]{64}$/).optional(),
    /**
     * Rich results of the run the REPL did not send as `display` frames while it ran (they follow
     * those, in order). Checked one by one by the host, as `display` frames are.
     */
    results: z.array(z.unknown()).max(MAX_RESULTS).optional(),
    /** The REPL dropped a result that did not fit in the output cap. */
    resultsCut: z.boolean().optional(),
  }),
  z.strictObject({
    type: z.literal("reply"),
    id,
    ok: z.boolean(),
    data: base64.optional(),
    exists: z.boolean().optional(),
    entries: z.array(dirEntrySchema).max(1_000_000).optional(),
    errno: z.string().max(32).optional(),
    message: z.string().max(64 * 1024).optional(),
  }),
]);

export type AgentMessage = z.infer<typeof agentMessageSchema>;
