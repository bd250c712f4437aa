import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRabbitMqBroker } from '../../src/brokers/rabbitmq.js';
import type { OutboxMessage, Relay } from '../../src/index.js';
import { AMQP_URL, consumedQueue, type QueueConsumer } from '../support/brokers/rabbitmq-fixture.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { testRelay, waitFor } from '../support/relay-helpers.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once RabbitMQ accepts an AMQP connection again; returns that moment (performance.now()). */
async function rabbitAnswers(): Promise<number> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const model = await amqp.connect(AMQP_URL, { timeout: 2000 });
      const at = performance.now();
      model.on('error', () => {});
      await model.close();
      return at;
    } catch (error) {
      if (Date.now() > deadline) throw new Error('RabbitMQ did not come back', { cause: error });
      await sleep(50);
    }
  }
}

const MAX_ATTEMPTS = 3;
const BACKOFF = { initialMs: 500, maxMs: 5000, factor: 2 };
/** Longer than maxAttempts × the first backoff steps (500 + 1000 + 2000 ms): without a breaker, every head dies. */
const OUTAGE_MS = 6000;

/** Stops RabbitMQ (a shared server), so this file runs in the serial project. */
describe.each(DIALECTS)('relay through a RabbitMQ outage on %s', (dialect) => {
  let h: Harness;
  let queue: { queue: string; consumer: QueueConsumer; close(): Promise<void> };
  beforeAll(async () => {
    h = await createHarness(dialect);
    queue = await consumedQueue('txoutbox-outage');
  });
  afterAll(async () => {
    // Whatever happened, leave RabbitMQ running for the files after this one.
    await run('rabbitmqctl', ['start_app']).catch(() => {});
    await queue?.close().catch(() => {});
    await h?.destroy();
  });

  it('dead-letters nothing during an outage longer than the retry budget, and drains within 1 s of its end', async () => {
    const broker = createRabbitMqBroker({ url: AMQP_URL, routes: { orders: { exchange: '', routingKey: queue.queue } } });
    let relay: Relay | undefined;
    try {
      relay = testRelay(h, broker, {
        maxAttempts: MAX_ATTEMPTS,
        backoff: BACKOFF,
        random: () => 1,
        pollIntervalMs: 100,
        leaseMs: 10_000,
        publishTimeoutMs: 5000,
      });
      const dead: string[] = [];
      relay.on('dead', (messages) => dead.push(...messages.map((m) => m.message.id)));
      relay.on('error', () => {});
      relay.start();
      const keys = 10;
      const batch = (round: number, count: number): OutboxMessage[] =>
        Array.from({ length: count }, (_, i) => ({
          id: `r${round}-${String(i).padStart(3, '0')}`,
          topic: 'orders',
          key: `k${i % keys}`,
          payload: { round, i },
        }));
      const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));

      // Flowing before the outage.
      const before = batch(0, 20);
      await commit(before);
      await waitFor(() => queue.consumer.received().length >= before.length, 20_000, 'the messages before the outage');

      await run('rabbitmqctl', ['stop_app']);
      const stoppedAt = performance.now();
      const during = batch(1, 200);
      try {
        // Committed while the broker is down: the relay tries them, finds RabbitMQ unreachable, and must wait.
        await commit(during.slice(0, 100));
        await sleep(OUTAGE_MS / 2);
        await commit(during.slice(100));
        await sleep(Math.max(0, OUTAGE_MS - (performance.now() - stoppedAt)));
        const rows = await h.rows();
        expect(rows.filter((row) => row.state === 'dead').map((row) => row.id)).toEqual([]);
        expect(Math.max(...rows.map((row) => row.attempts))).toBeLessThanOrEqual(1);
      } finally {
        await run('rabbitmqctl', ['start_app']);
      }
      const back = await rabbitAnswers();
      await waitFor(async () => (await h.rows()).length === 0, 20_000, 'the outage backlog to drain');
      const drainedMs = performance.now() - back;
      expect(dead).toEqual([]);
      expect(drainedMs, `the backlog drained ${Math.round(drainedMs)} ms after RabbitMQ answered again`).toBeLessThan(1000);

      // Everything arrives, in per-key order (a resend after the restart may duplicate; order holds per first arrival).
      const all = [...before, ...during];
      await waitFor(
        () => new Set(queue.consumer.received().map((m) => m.id)).size >= all.length,
        30_000,
        'every message at the consumer',
      );
      for (let key = 0; key < keys; key++) {
        const seen: string[] = [];
        for (const m of queue.consumer.received()) if (m.key === `k${key}` && !seen.includes(m.id)) seen.push(m.id);
        expect(seen).toEqual(all.filter((m) => m.key === `k${key}`).map((m) => m.id));
      }
    } finally {
      await relay?.stop({ drainMs: 100 });
      await broker.close();
    }
  });
});
