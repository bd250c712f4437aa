import { errorText } from './errors.js';

/** What a race against an abort signal yields when the signal won. */
export const ABORTED = Symbol('aborted');

/** Calls `listener` once when `signal` aborts (at once when it already has); returns what removes the listener. */
export function onAbort(signal: AbortSignal, listener: () => void): () => void {
  if (signal.aborted) {
    listener();
    return () => {};
  }
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

/**
 * A promise that resolves with ABORTED once `signal` aborts (at once when it already has), never rejecting. One
 * listener serves any number of races, which matters for a batch of thousands; `dispose` removes it.
 */
export function whenAborted(signal: AbortSignal): { aborted: Promise<typeof ABORTED>; dispose: () => void } {
  let dispose = () => {};
  const aborted = new Promise<typeof ABORTED>((resolve) => {
    dispose = onAbort(signal, () => resolve(ABORTED));
  });
  return { aborted, dispose };
}

/** `promise`'s value, or ABORTED when `signal` aborts first (or already has). For promises that never reject. */
export async function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | typeof ABORTED> {
  if (signal.aborted) return ABORTED;
  const abort = whenAborted(signal);
  try {
    return await Promise.race([promise, abort.aborted]);
  } finally {
    abort.dispose();
  }
}

/** Why `signal` aborted, as text for an outcome's error ('aborted' when it gave no reason). */
export function abortReason(signal: AbortSignal): string {
  return errorText(signal.reason ?? 'aborted');
}
