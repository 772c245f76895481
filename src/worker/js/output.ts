// The guest's stdout/stderr: QuickJS hands output over as text, cut here at the output limit
// (without splitting a character) and batched into frames by the shared OutputBatcher.
// Rich results (display()) are charged against the same cap and sent as they happen.
import { ResultGate, type DisplayResult } from "../../protocol/display.js";
import { cutUtf8, OutputBatcher } from "../common.js";

export class Output extends OutputBatcher {
  private gate: ResultGate | undefined;

  /** `send`: where a result's `display` frame goes (after the output before it, as send() keeps order). */
  constructor(
    words: Int32Array,
    private readonly send: (message: unknown) => void,
  ) {
    super(words);
  }

  /** A result was dropped because it did not fit: the run hit the output limit. */
  get resultsCut(): boolean {
    return this.gate?.cut ?? false;
  }

  override start(runId: number, cap: number): void {
    super.start(runId, cap);
    this.gate = new ResultGate(
      { room: () => this.room, charge: (n) => (this.bytes += n) },
      (text) => this.write("stderr", text),
      (result) => this.send({ type: "display", id: runId, result }),
    );
  }

  /** Send a well-formed result now if it fits in the room left; otherwise drop it with a note. */
  addResult(r: DisplayResult): void {
    if (this.runId === 0) return;
    this.gate?.add(r);
  }

  write(stream: "stdout" | "stderr", text: string): void {
    if (!this.open) return;
    const n = Buffer.byteLength(text);
    const fit = this.admit(n);
    this.push(stream, fit < n ? cutUtf8(text, fit) : text);
  }
}
