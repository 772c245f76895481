// The guest's stdout/stderr in the Python worker: Python hands output over as bytes, cut here at
// the output limit and decoded per stream, then batched into frames by the shared OutputBatcher.
import { OutputBatcher } from "../common.js";

/** Python hands output over as bytes: cut at the cap in bytes, decoded per stream. */
export class OutputCapture extends OutputBatcher {
  private readonly decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };

  write(stream: "stdout" | "stderr", buf: Uint8Array): number {
    if (!this.open) return buf.length;
    const fit = this.admit(buf.length);
    this.push(stream, this.decoders[stream].decode(buf.subarray(0, fit), { stream: !this.hit }));
    return buf.length;
  }

  override end(): void {
    for (const s of ["stdout", "stderr"] as const) {
      const rest = this.decoders[s].decode();
      if (rest) this.write(s, new TextEncoder().encode(rest));
    }
    super.end();
  }
}
