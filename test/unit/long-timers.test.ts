import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DashboardSampler } from '../../src/cli/dashboard/sampler.js';
import { createRelay, type Broker, type PublishOutcome } from '../../src/index.js';
import { publishWithDeadline } from '../../src/relay/publish-with-deadline.js';
import { Waker } from '../../src/relay/waker.js';
import { MAX_TIMER_MS, setLongInterval, setLongTimeout } from '../../src/timers.js';
import { MemoryRelayStore } from '../support/memory-relay-store.js';

const HOUR = 60 * 60 * 1000;
const DAYS_30 = 30 * 24 * HOUR;

/**
 * Delays past 2^31 - 1 ms (about 24.8 days). Vitest's fake timers overflow as Node's do (such a timer fires after
 * 1 ms), so each of these fails on a plain setTimeout/setInterval.
 */
describe('timers at 30 days', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('setLongTimeout fires after the whole delay, not before, and clear() stops it', async () => {
    expect(DAYS_30).toBeGreaterThan(MAX_TIMER_MS);
    const fired = vi.fn();
    setLongTimeout(fired, DAYS_30);
    const cleared = vi.fn();
    setLongTimeout(cleared, DAYS_30).clear();
    await vi.advanceTimersByTimeAsync(DAYS_30 - 1);
    expect(fired).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(fired).toHaveBeenCalledOnce();
    await vi.advanceTimersByTimeAsync(DAYS_30);
    expect(cleared).not.toHaveBeenCalled();
  });

  it('setLongInterval fires once per period until cleared', async () => {
    const fired = vi.fn();
    const timer = setLongInterval(fired, DAYS_30);
    await vi.advanceTimersByTimeAsync(DAYS_30 - 1);
    expect(fired).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(fired).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(DAYS_30);
    expect(fired).toHaveBeenCalledTimes(2);
    timer.clear();
    await vi.advanceTimersByTimeAsync(2 * DAYS_30);
    expect(fired).toHaveBeenCalledTimes(2);
  });

  it("an idle relay worker's 30-day poll does not wake it after 1 ms (a poll is a hint: it may come early, by days)", async () => {
    const waker = new Waker();
    let woke: boolean | null = null;
    void waker.sleep(DAYS_30).then((answer) => (woke = answer));
    await vi.advanceTimersByTimeAsync(HOUR);
    expect(woke).toBeNull();
    await vi.advanceTimersByTimeAsync(DAYS_30);
    expect(woke).toBe(false);
  });

  it('a 30-day publish deadline waits for a broker that answers after an hour', async () => {
    const answered: PublishOutcome[] = [{ status: 'ok' }];
    const slow: Broker = {
      name: 'slow',
      publish: () => new Promise((resolve) => setTimeout(() => resolve(answered), HOUR)),
    };
    const message = {
      id: 'm',
      topic: 't',
      key: null,
      payload: Buffer.from('1'),
      contentType: 'application/json',
      headers: {},
      attempt: 1,
      createdAt: new Date(),
    };
    const outcomes = publishWithDeadline(slow, [message], DAYS_30, new Set());
    await vi.advanceTimersByTimeAsync(HOUR);
    expect(await outcomes).toEqual(answered);
  });

  it("a relay's 30-day cleanup interval and polls run cleanup once in 30 days, not every millisecond", async () => {
    const store = new MemoryRelayStore();
    const cleanup = vi.spyOn(store, 'cleanup');
    const relay = createRelay({
      db: { executeQuery: () => undefined } as never,
      dialect: 'mysql',
      broker: { name: 'none', publish: async (messages) => messages.map(() => ({ status: 'ok' as const })) },
      store,
      concurrency: 1,
      cleanupIntervalMs: DAYS_30,
      pollIntervalMs: DAYS_30,
      leaseMs: 2 * DAYS_30,
      publishTimeoutMs: DAYS_30,
    });
    relay.start();
    try {
      await vi.advanceTimersByTimeAsync(1000);
      expect(cleanup).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(DAYS_30 - 1000);
      expect(cleanup).toHaveBeenCalledOnce();
    } finally {
      const stopped = relay.stop({ drainMs: DAYS_30 });
      await vi.advanceTimersByTimeAsync(0);
      await stopped;
    }
  });

  it("the dashboard's 30-day sample interval reads once in 30 days, not every millisecond", async () => {
    const sampler = new DashboardSampler([], { intervalMs: DAYS_30, slotsOf: () => [], describe: String });
    const round = vi.spyOn(sampler, 'round');
    await sampler.start();
    try {
      await vi.advanceTimersByTimeAsync(1000);
      expect(round).toHaveBeenCalledOnce(); // the first reading, at start
      await vi.advanceTimersByTimeAsync(DAYS_30 - 1000);
      expect(round).toHaveBeenCalledTimes(2);
    } finally {
      await sampler.close();
    }
  });
});
