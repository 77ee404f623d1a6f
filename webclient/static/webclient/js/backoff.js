// Reconnection delays: exponential backoff with full jitter and a cap (the AWS architecture
// blog's "full jitter": a random delay between 0 and min(cap, base * 2^attempt)), so that
// many clients cut off by one restart do not all come back in the same second.

export const BACKOFF = Object.freeze({
  baseMs: 500,
  capMs: 30_000,
  // A connection open this long counts as stable: the next drop starts again from attempt 0.
  stableMs: 10_000,
});

/** The delay before reconnection attempt `attempt` (0, 1, 2, ...). */
export function backoffDelay(attempt, { baseMs, capMs } = BACKOFF, random = Math.random) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
