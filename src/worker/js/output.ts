// The guest's stdout/stderr: QuickJS hands output over as text, cut here at the output limit
// (without splitting a character) and batched into frames by the shared OutputBatcher.
import { cutUtf8, OutputBatcher } from "../common.js";

export class Output extends OutputBatcher {
  write(stream: "stdout" | "stderr", text: string): void {
    if (!this.open) return;
    const n = Buffer.byteLength(text);
    const fit = this.admit(n);
    this.push(stream, fit < n ? cutUtf8(text, fit) : text);
  }
}
