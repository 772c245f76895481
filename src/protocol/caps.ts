// Size caps of protocol messages that both sides check (the worker first, so a guest's mistake is
// a guest error; the host's schema again, since the worker is hostile). No dependencies: the
// worker process imports this.

/** Caps of a fetch request frame (network grant). */
export const FETCH_LIMITS = { urlChars: 16 * 1024, headers: 256, headerNameChars: 256, headerValueChars: 16 * 1024, inFlight: 64 } as const;
