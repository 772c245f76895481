// The guest's stdout/stderr: QuickJS hands output over as text, cut here at the output limit
// (without splitting a character) and batched into frames by the shared OutputBatcher.
// Rich results (display()) are charged against the same cap and collected for the result frame.
import { displayResultBytes, MAX_RESULTS, type DisplayResult } from "../../protocol/display.js";
import { cutUtf8, OutputBatcher } from "../common.js";

export class Output extends OutputBatcher {
  /** This run's display() results, already checked and counted in `bytes`. */
  results: DisplayResult[] = [];
  /** A result was dropped because it did not fit: the run hit the output limit. */
  resultsCut = false;

  override start(runId: number, cap: number): void {
    super.start(runId, cap);
    this.results = [];
    this.resultsCut = false;
  }

  /** Keep a well-formed result if it fits in the room left; otherwise drop it with a note. */
  addResult(r: DisplayResult): void {
    if (this.runId === 0) return;
    const n = displayResultBytes(r);
    if (this.results.length >= MAX_RESULTS || n > this.room) {
      if (!this.resultsCut) this.write("stderr", `display: a result of ${n} bytes did not fit in the output limit (limits.outputBytes); dropped\n`);
      this.resultsCut = true;
      return;
    }
    this.bytes += n;
    this.results.push(r);
  }

  write(stream: "stdout" | "stderr", text: string): void {
    if (!this.open) return;
    const n = Buffer.byteLength(text);
    const fit = this.admit(n);
    this.push(stream, fit < n ? cutUtf8(text, fit) : text);
  }
}
