import { describe, expect, inject, it } from 'vitest';
import { runChaos } from './scenario.js';

/**
 * The short chaos run of `npm test` (`npm run chaos` runs the long ones): one relay process, SIGKILLed three times
 * over 2k keyed messages, and RabbitMQ restarted once, while a producer keeps committing; a consumer service behind the
 * inbox must apply each message exactly once. Serial: it restarts RabbitMQ.
 */
describe('chaos, short', () => {
  it('loses nothing, keeps per-key order and applies each message once behind the inbox, through 3 relay SIGKILLs and a RabbitMQ restart', async () => {
    const report = await runChaos({
      name: 'short',
      dialect: 'postgres',
      url: inject('pgUrl'),
      broker: 'rabbitmq',
      relays: 1,
      messages: 2000,
      rate: 250,
      keys: 50,
      kills: 3,
      brokerRestarts: 1,
      databaseKills: 0,
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
      brokerRestarts: 1,
      uncleanExits: 0,
    });
    expect(report.resumeMs).toHaveLength(1);
  }, 180_000);
});
