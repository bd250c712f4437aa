import { describe, expect, inject, it } from 'vitest';
import { runChaos } from './scenario.js';

/**
 * The short chaos run of the logical relay in `npm test` (`npm run chaos` runs the long ones): one relay process
 * streams the slot and one stands by; the streaming one is SIGKILLed three times over 2k keyed messages while a
 * producer keeps committing. Serial: it kills WAL senders and runs relay processes, which would slow its neighbours.
 */
describe('chaos, short, mode logical', () => {
  it('loses nothing, keeps per-key order, applies each message once behind the inbox, and the standby publishes within 5 s of each SIGKILL', async () => {
    const report = await runChaos({
      name: 'short-logical',
      dialect: 'postgres',
      url: inject('pgUrl'),
      broker: 'rabbitmq',
      mode: 'logical',
      relays: 2,
      messages: 2000,
      rate: 250,
      keys: 50,
      kills: 3,
      brokerRestarts: 0,
      databaseKills: 0,
      // Fail with a report, not the test's timeout, when messages are missing.
      settleTimeoutMs: 30_000,
      log: (line) => process.stderr.write(`chaos: ${line}\n`),
    });
    expect(report).toMatchObject({
      committed: 2000,
      lost: 0,
      reordered: 0,
      duplicatesAfterInbox: 0,
      missingEffects: 0,
      deadHealthy: 0,
      rowsLeft: 0,
      kills: 3,
      crashes: 0,
      uncleanExits: 0,
    });
    // Every kill hit the relay streaming the slot, and another relay took over and published within 5 s.
    expect(report.takeoverMs).toHaveLength(3);
    for (const ms of report.takeoverMs) expect(ms).toBeLessThanOrEqual(5000);
  }, 240_000);
});
