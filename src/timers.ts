/**
 * Timers for delays that come from options or data. Node's setTimeout and setInterval hold a signed 32-bit count
 * of milliseconds: a longer delay (about 24.8 days) fires after 1 ms, with only a TimeoutOverflowWarning to say so.
 * Used by the relay, the brokers, the inbox consumers and the sidecar; the logical relay can use it too.
 */

/** The longest delay a Node timer holds. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timer of any length. */
export interface LongTimer {
  clear(): void;
  /** Lets the process exit while only this timer is pending (as `Timeout.unref`). */
  unref(): LongTimer;
}

/**
 * For a wake-up that is only a hint (an idle poll, a keep-alive): an early one costs nothing, so a delay past what a
 * timer holds is capped to it.
 */
export function hintDelay(ms: number): number {
  return Math.min(ms, MAX_TIMER_MS);
}

/**
 * setTimeout for any delay, for a deadline or schedule that must not come early: it waits in steps a timer holds,
 * re-arming until the whole delay has passed. A delay below 1 ms (or NaN) fires at once, as setTimeout's does.
 */
export function setLongTimeout(callback: () => void, ms: number): LongTimer {
  let remaining = ms > 0 ? ms : 0;
  let referenced = true;
  let timer: NodeJS.Timeout;
  const arm = () => {
    const step = Math.min(remaining, MAX_TIMER_MS);
    timer = setTimeout(() => {
      remaining -= step;
      if (remaining > 0) arm();
      else callback();
    }, step);
    if (!referenced) timer.unref();
  };
  arm();
  const handle: LongTimer = {
    clear: () => clearTimeout(timer),
    unref() {
      referenced = false;
      timer.unref();
      return handle;
    },
  };
  return handle;
}

/** setInterval for any period: each period is a setLongTimeout, armed again when it fires. */
export function setLongInterval(callback: () => void, ms: number): LongTimer {
  let current: LongTimer;
  let referenced = true;
  let cleared = false;
  const arm = () => {
    current = setLongTimeout(() => {
      if (cleared) return;
      arm();
      callback();
    }, ms);
    if (!referenced) current.unref();
  };
  arm();
  const handle: LongTimer = {
    clear() {
      cleared = true;
      current.clear();
    },
    unref() {
      referenced = false;
      current.unref();
      return handle;
    },
  };
  return handle;
}
