// What the CLI prints for a failed run or command with --json (shared by run and exec).
import { LimitError, type AgentboxError } from "../index.js";

/**
 * `--json` output for a failed run or command: the error, and the output the guest produced before
 * a limit or a signal stopped it (`stdout`, `stderr`, `limitHit`), so nothing printed is lost.
 */
export function errorJson(err: Partial<AgentboxError> & Error, exitCode: number): Record<string, unknown> {
  const out: Record<string, unknown> = { error: { name: err.name, code: err.code ?? "USAGE", message: err.message } };
  if (err.result) {
    out.stdout = err.result.stdout;
    out.stderr = err.result.stderr;
  }
  const limit = err.result?.limitHit ?? (err instanceof LimitError ? err.limit : undefined);
  if (limit) out.limitHit = limit;
  out.exitCode = exitCode;
  return out;
}
