import { describe, expect, it } from 'vitest';
import type { PublishOutcome } from '../../src/brokers/broker.js';
import { CircuitBreaker } from '../../src/relay/circuit-breaker.js';

const down: PublishOutcome = { status: 'retryable', error: 'cannot reach the broker', unreachable: true };
const ok: PublishOutcome = { status: 'ok' };

describe('CircuitBreaker', () => {
  let now = 0;
  const breaker = () => new CircuitBreaker(500, () => now);

  it('lets full batches through until an outcome says the broker is unreachable', () => {
    const b = breaker();
    expect(b.allowance(100)).toBe(100);
    b.record([ok, { status: 'retryable', error: 'nacked' }, { status: 'permanent', error: 'no route' }]);
    expect(b.allowance(100)).toBe(100);
    b.record([ok, down]);
    expect(b.isOpen).toBe(true);
    expect(b.allowance(100)).toBe(0);
  });

  it('gives one probe per interval while open, and closes when a probe gets any answer', () => {
    now = 0;
    const b = breaker();
    b.record([down]);
    now = 499;
    expect(b.allowance(100)).toBe(0);
    now = 500;
    expect(b.allowance(100)).toBe(1);
    // Only one worker probes at a time.
    expect(b.allowance(100)).toBe(0);
    b.record([down]);
    now = 900;
    expect(b.allowance(100)).toBe(0);
    now = 1000;
    expect(b.allowance(100)).toBe(1);
    b.record([{ status: 'retryable', error: 'nacked' }]);
    expect(b.isOpen).toBe(false);
    expect(b.allowance(100)).toBe(100);
  });

  it('stays open when the probe finds nothing to send (the next probe an interval later), and wakes waiting workers when it closes', async () => {
    now = 0;
    const b = breaker();
    b.record([down]);
    now = 500;
    expect(b.allowance(100)).toBe(1);
    b.claimedNothing();
    expect(b.isOpen).toBe(true);
    expect(b.allowance(100)).toBe(0);
    now = 500 + b.probeIntervalMs - 1;
    expect(b.allowance(100)).toBe(0);
    now = 500 + b.probeIntervalMs;
    expect(b.allowance(100)).toBe(1);
    let woken = false;
    const waiting = b.wait().then(() => (woken = true));
    b.record([{ status: 'ok' }]);
    await waiting;
    expect(woken).toBe(true);
    expect(b.allowance(100)).toBe(100);
  });
});
