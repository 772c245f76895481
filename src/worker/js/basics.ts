// The host functions behind the prelude's console, Math.random / crypto and TextEncoder /
// TextDecoder: output counted against the limit, the sandbox's seeded random stream, UTF-8.
import { displayResultProblem, type DisplayResult } from "../../protocol/display.js";
import type { Output } from "./output.js";
import type { GuestValues, HostFn } from "./values.js";

export function basicHostFunctions(v: GuestValues, output: Output, rng: (view: Uint8Array) => void): Record<string, HostFn> {
  const ctx = v.ctx;
  return {
    write: (stream, text) => {
      output.write(v.num(stream, "stream") === 1 ? "stderr" : "stdout", v.str(text, "text"));
    },
    outputRoom: () => ctx.newNumber(output.room),
    // display(): the prelude builds the bundle as JSON text; binary data may come as bytes instead.
    display: (json, mime, bytes) => {
      let data: unknown;
      try {
        data = JSON.parse(v.str(json, "data"));
      } catch {
        throw ctx.newError({ name: "TypeError", message: "display: the bundle is not JSON" });
      }
      if (typeof data !== "object" || data === null || Array.isArray(data)) throw ctx.newError({ name: "TypeError", message: "display: the bundle must be an object" });
      if (bytes && ctx.typeof(bytes) === "object") (data as Record<string, string>)[v.str(mime, "mimeType")] = Buffer.from(v.bytes(bytes)).toString("base64");
      const result = { data, main: false };
      const problem = displayResultProblem(result);
      if (problem) throw ctx.newError({ name: "TypeError", message: `display: ${problem}` });
      output.addResult(result as DisplayResult);
    },
    random: () => {
      const b = new Uint8Array(8);
      rng(b);
      const d = new DataView(b.buffer);
      return ctx.newNumber((d.getUint32(0) * 2 ** 21 + (d.getUint32(4) >>> 11)) / 2 ** 53);
    },
    randomBytes: (n) => {
      const len = v.num(n, "length");
      if (!Number.isInteger(len) || len < 0 || len > 65536) throw ctx.newError({ name: "RangeError", message: "randomBytes: 0..65536 bytes" });
      const b = new Uint8Array(len);
      rng(b);
      return v.arrayBuffer(b);
    },
    encode: (s) => v.arrayBuffer(Buffer.from(v.str(s, "text"), "utf8")),
    decode: (b) => ctx.newString(Buffer.from(v.bytes(b)).toString("utf8")),
  };
}
