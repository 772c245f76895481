// A series of requests (EngineSeries) answered one at a time through the Engine interface alone:
// the fallback for engines that cannot send many requests at once, and for sandboxes whose requests
// must not all go out together (a network grant: each replayed fetch is answered anew, so order and
// an early stop matter). Imports no engine.
import { FileSystemError, TierUnavailableError } from "../errors.js";
import type { Engine, EngineSeriesAnswer, EngineSeriesStep } from "./engine.js";

/** Each request sent when the one before it has answered; a failed step ends the series (thrown). */
export async function seriesOneByOne(
  engine: Engine,
  steps: readonly EngineSeriesStep[],
  each: (index: number, answer: EngineSeriesAnswer) => void,
): Promise<{ done: number; pipelined: false }> {
  let done = 0;
  for (const [i, step] of steps.entries()) {
    each(i, await answer(engine, step));
    done++;
  }
  return { done, pipelined: false };
}

async function answer(e: Engine, step: EngineSeriesStep): Promise<EngineSeriesAnswer> {
  switch (step.kind) {
    case "run":
      return { kind: "run", result: await e.run(step.code, { timeoutMs: step.timeoutMs }) };
    case "write":
      await e.writeFile(step.path, step.data);
      return { kind: "done" };
    case "remove":
      await e.remove(step.path);
      return { kind: "done" };
    case "mkdir":
      await e.makeDir(step.path);
      return { kind: "done" };
    case "reseed":
      if (!e.reseed) throw new TierUnavailableError("this engine cannot reseed its randomness");
      await e.reseed(step.seed);
      return { kind: "done" };
  }
  // Queries: a refusal (no such file, not a directory) is their answer; they changed nothing.
  try {
    if (step.kind === "read") return { kind: "read", data: await e.readFile(step.path) };
    if (step.kind === "list") return { kind: "list", entries: await e.list(step.path) };
    return { kind: "exists", exists: await e.exists(step.path) };
  } catch (err) {
    if (err instanceof FileSystemError) return { kind: "failed", error: err };
    throw err;
  }
}
