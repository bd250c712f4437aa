import { hintDelay } from '../timers.js';

/**
 * Lets idle relay workers sleep until there may be work: a wake-up (NOTIFY, kick) or a timeout, whichever is
 * first. A wake-up resumes one sleeper (one claim finds a trickle of work; the worker that finds a full batch
 * wakes a helper). A wake-up that arrives while nobody sleeps is remembered once, so a notification that lands
 * during a claim is not lost; repeated wake-ups fold into one.
 */
export class Waker {
  private sleepers = new Set<() => void>();
  private pending = false;

  wake(): void {
    const [first] = this.sleepers;
    if (first === undefined) {
      this.pending = true;
      return;
    }
    this.sleepers.delete(first);
    first();
  }

  /** Resumes every sleeper (the relay is stopping). */
  wakeAll(): void {
    for (const resume of this.sleepers) resume();
    this.sleepers.clear();
  }

  /** Resolves true when woken, false when `ms` passed (never, without `ms`). */
  sleep(ms?: number): Promise<boolean> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const timer =
        ms === undefined
          ? undefined
          : setTimeout(() => {
              this.sleepers.delete(resume);
              resolve(false);
              // A timeout is only a poll: capped to what a timer holds (an overflowed one would poll after 1 ms).
            }, hintDelay(ms));
      const resume = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.sleepers.add(resume);
    });
  }
}
