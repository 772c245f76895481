// Size caps of protocol messages that both sides check (the worker first, so a guest's mistake is
// a guest error; the host's schema again, since the worker is hostile). No dependencies: the
// worker process imports this.

/** Caps of a fetch request frame (network grant). */
export const FETCH_LIMITS = { urlChars: 16 * 1024, headers: 256, headerNameChars: 256, headerValueChars: 16 * 1024, inFlight: 64 } as const;

/**
 * What is wrong with a guest's fetch request (method, URL, header pairs) against FETCH_LIMITS, or
 * null: the one check the JavaScript fetch bridge and the Python network channel both make before
 * a request leaves the worker.
 */
export function fetchRequestProblem(method: string, url: string, headers: readonly unknown[]): string | null {
  if (!/^[A-Z]{1,16}$/.test(method)) return `invalid method ${JSON.stringify(method.slice(0, 32))}`;
  if (url.length > FETCH_LIMITS.urlChars) return `URL longer than ${FETCH_LIMITS.urlChars} characters`;
  if (headers.length > FETCH_LIMITS.headers) return `more than ${FETCH_LIMITS.headers} headers`;
  for (const pair of headers) {
    const ok = Array.isArray(pair) && pair.length === 2 && typeof pair[0] === "string" && typeof pair[1] === "string";
    if (!ok || (pair[0] as string).length > FETCH_LIMITS.headerNameChars || (pair[1] as string).length > FETCH_LIMITS.headerValueChars) return "invalid or oversized header";
  }
  return null;
}
