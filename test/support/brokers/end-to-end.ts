import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRelay, type Relay } from '../../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../harness.js';
import { waitFor } from '../relay-helpers.js';
import type { BrokerFixture, BrokerUnderTest } from './contract.js';

const MESSAGES = 10_000;
const KEYS = 100;

/**
 * The whole path on real servers: producers commit 10k keyed messages into PostgreSQL or MariaDB, two relays
 * publish them through the adapter, and a real consumer of the broker must receive every one, in order per key.
 */
export function relayEndToEnd(fixture: BrokerFixture): void {
  describe.each(DIALECTS)(`relay → ${fixture.name} end to end on %s`, (dialect) => {
    let h: Harness;
    let subject: BrokerUnderTest;
    let skip: string | null = null;
    beforeAll(async () => {
      skip = await fixture.skipReason();
      if (skip !== null) return;
      h = await createHarness(dialect, 20);
      subject = await fixture.open();
    });
    afterAll(async () => {
      await subject?.close();
      await h?.destroy();
    });

    it(`delivers ${MESSAGES} messages, every one received, in per-key order`, async (context) => {
      if (skip !== null) return context.skip(skip);
      const expected = new Map<string, string[]>();
      for (let batch = 0; batch < MESSAGES / 1000; batch++) {
        const messages = Array.from({ length: 1000 }, (_, i) => {
          const n = batch * 1000 + i;
          return { id: `e2e-${dialect}-${n}`, topic: subject.topic, key: `key-${n % KEYS}`, payload: { n } };
        });
        await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
        for (const m of messages) expected.set(m.key, [...(expected.get(m.key) ?? []), m.id]);
      }
      const relays: Relay[] = [1, 2].map((n) =>
        createRelay({ db: h.db, dialect, schema: h.schema, broker: subject.broker, instanceId: `e2e-${n}`, batchSize: 100 }),
      );
      relays.forEach((relay) => relay.start());
      try {
        await waitFor(
          async () => new Set((await subject.received()).map((m) => m.id)).size >= MESSAGES,
          240_000,
          `${MESSAGES} messages at the consumer`,
        );
      } finally {
        await Promise.all(relays.map((relay) => relay.stop()));
      }
      const received = await subject.received();
      for (const [key, order] of expected) {
        const firstSeen = [...new Set(received.filter((m) => m.key === key).map((m) => m.id))];
        expect(firstSeen).toEqual(order);
      }
      expect(await h.rows()).toEqual([]);
    }, 300_000);
  });
}
