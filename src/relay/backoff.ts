export interface BackoffOptions {
  /** Delay before the first retry. */
  initialMs: number;
  /** Ceiling for any one delay. */
  maxMs: number;
  /** Growth per attempt. */
  factor: number;
}

/**
 * Exponential backoff with "equal jitter": half the exponential delay for certain, the other half random, so
 * retries of messages that failed together spread out instead of hitting a recovering broker all at once.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number): number {
  const exponential = Math.min(options.maxMs, options.initialMs * options.factor ** Math.max(0, attempt - 1));
  return Math.round(exponential / 2 + (random() * exponential) / 2);
}
