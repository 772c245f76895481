// Request bodies read with a cap: every surface of the server (native, E2B, Connect) reads through
// here, so none buffers more than its limit whatever Content-Length claims.
import { HttpError } from "./http-errors.js";

/** The body as bytes; `tooBig()` is thrown (the read cancelled) once it passes `max`, or at once when Content-Length says it will. */
export async function readCappedBody(req: Request, max: number, tooBig: () => Error): Promise<Uint8Array> {
  const declared = Number(req.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > max) throw tooBig();
  if (!req.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let n = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel().catch(() => undefined);
      throw tooBig();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/** A JSON body (capped as above); empty is `{}` when `optional`; what is not JSON is `badJson(reason)`. */
export async function readJsonBody(req: Request, max: number, optional: boolean, errors: { tooBig: () => Error; badJson: (reason: string) => Error }): Promise<unknown> {
  const text = new TextDecoder().decode(await readCappedBody(req, max, errors.tooBig));
  if (text.trim() === "" && optional) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw errors.badJson(`request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** A JSON request body for the HTTP surfaces: past `max` a 413, not JSON `badJson(reason)` (default a 400 INVALID_JSON). */
export function readJsonRequest(req: Request, max: number, optional = false, badJson = (reason: string): Error => new HttpError(400, "INVALID_JSON", reason)): Promise<unknown> {
  return readJsonBody(req, max, optional, { tooBig: () => new HttpError(413, "BODY_TOO_LARGE", `request body is over the server's limit of ${max} bytes`, { value: max }), badJson });
}
