import { describe, expect, it } from 'vitest';
import { receiveDeadlineMs } from '../../src/relay/logical/receive-deadline.js';

/**
 * A relay cut off from the server must let go of its slot before the server frees it for a standby (a whole
 * wal_sender_timeout after the last status it heard), and never on a live link (the server answers every status,
 * and sends a keepalive once it has not heard from the relay for half its timeout).
 */
describe('the receive deadline of the replication connection', () => {
  const interval = 1000;

  it.each([10_000, 15_000, 30_000, 60_000, 300_000])(
    'with wal_sender_timeout %i ms it lies between a live link’s silence and the server’s timeout',
    (timeout) => {
      const deadline = receiveDeadlineMs(timeout, interval)!;
      // Silence on a live link: half the timeout, plus a status interval for the answer to come.
      expect(deadline).toBeGreaterThan(timeout / 2 + interval);
      // The relay's last message may be an interval younger than the status the server last heard; it checks every quarter interval.
      expect(deadline + interval / 4).toBeLessThan(timeout - interval);
    },
  );

  it('is three quarters of the default timeout (45 s of 60 s)', () => {
    expect(receiveDeadlineMs(60_000, interval)).toBe(45_000);
  });

  it('is none when the server has no timeout (wal_sender_timeout = 0)', () => {
    expect(receiveDeadlineMs(0, interval)).toBeNull();
  });
});
