import { fork, type ChildProcess } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DEFAULT_RETRY_DELAYS_MS } from '../../src/dedupe/consumers/core.js';
import { createRabbitMqInboxConsumer, type RabbitMqInboxConsumer } from '../../src/dedupe/consumers/rabbitmq.js';
import type { Inbox } from '../../src/index.js';
import { AMQP_URL, randomName, withChannel } from '../support/brokers/rabbitmq-fixture.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { applyEffect, effects, setUpInbox } from '../support/inbox-helpers.js';
import { waitFor } from '../support/relay-helpers.js';

const MESSAGES = 5000;
const KEYS = 50;
/** Confirmed messages a relay process publishes before it is killed. */
const KILL_AFTER = 600;
const noop = () => {};

/**
 * The whole path with real crashes: 5k messages committed to the outbox, a relay in a child process publishing them
 * to RabbitMQ is SIGKILLed (no release of its leases) right after RabbitMQ confirmed a batch and before the relay
 * marked it sent, twice at least, so the relay that takes over resends those messages; the inbox consumer must apply
 * each message's effect exactly once.
 */
describe.each(DIALECTS)('outbox → relay killed twice → RabbitMQ → inbox consumer on %s', (dialect) => {
  let h: Harness;
  let inbox: Inbox;
  let queue: string;
  let consumer: RabbitMqInboxConsumer<any> | undefined;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    h = await createHarness(dialect, 20);
    inbox = await setUpInbox(h);
    queue = randomName('txoutbox-inbox-e2e');
    await withChannel((channel) => channel.assertQueue(queue, { durable: true }));
  });
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await consumer?.close();
    await withChannel(async (channel) => {
      const retryQueues = DEFAULT_RETRY_DELAYS_MS.map((delay) => `${queue}.retry.${delay}ms`);
      for (const name of [queue, ...retryQueues]) await channel.deleteQueue(name).catch(noop);
    }).catch(noop);
    await h?.destroy();
  });

  /** Starts a relay process; resolves once it runs. `onConfirmed` sees each batch RabbitMQ confirmed to it. */
  async function startRelay(pauseMs: number, onConfirmed: (child: ChildProcess, ids: string[]) => void): Promise<ChildProcess> {
    const url = dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl');
    const script = new URL('../support/relay-process.ts', import.meta.url).pathname;
    const child = fork(script, [dialect, url, h.schema, queue, AMQP_URL, String(pauseMs)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.add(child);
    child.once('exit', () => children.delete(child));
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`the relay process exited early (${code})`)));
      child.on('message', (message: { started?: boolean; confirmed?: string[] }) => {
        if (message.started) resolve();
        if (message.confirmed) onConfirmed(child, message.confirmed);
      });
    });
    return child;
  }

  const kill = (child: ChildProcess) =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });

  const outboxIds = async (): Promise<Set<string>> => {
    const { rows } = await sql<{ id: string | Buffer }>`SELECT id FROM ${sql.id(h.schema, 'txoutbox')}`.execute(h.db);
    return new Set(rows.map((row) => String(row.id)));
  };

  it(`applies each of ${MESSAGES} messages exactly once although crashed relays resent some`, async () => {
    for (let batch = 0; batch < MESSAGES / 1000; batch++) {
      const messages = Array.from({ length: 1000 }, (_, i) => {
        const n = batch * 1000 + i;
        return { id: `e2e-${n}`, topic: 'orders.created', key: `key-${n % KEYS}`, payload: { n } };
      });
      await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
    }

    const deliveries = new Map<string, number>();
    let duplicates = 0;
    consumer = createRabbitMqInboxConsumer<any>({
      url: AMQP_URL,
      queue,
      db: h.db,
      inbox,
      prefetch: 50,
      handler: (message, trx) => applyEffect(h, trx, message.id),
    });
    const count = (id: string) => deliveries.set(id, (deliveries.get(id) ?? 0) + 1);
    consumer.on('processed', (m) => count(m.id));
    consumer.on('duplicate', (m) => (count(m.id), duplicates++));
    consumer.on('error', noop);
    await consumer.start();

    // Kill relays until two kills provably left messages confirmed by RabbitMQ but still in the outbox: those
    // are published again by the next relay, once the dead one's leases expire.
    const provenResends = new Set<string>();
    let provingKills = 0;
    for (let kills = 0; provingKills < 2; kills++) {
      if (kills === 10) throw new Error(`10 kills, only ${provingKills} of them left confirmed messages in the outbox`);
      const confirmed = new Set<string>();
      let killing: Promise<void> | null = null;
      const killed = new Promise<void>((resolve, reject) => {
        startRelay(300, (child, ids) => {
          if (killing !== null) return;
          for (const id of ids) confirmed.add(id);
          // Killed during the pause after a confirm: this batch is confirmed and not yet marked sent.
          if (confirmed.size >= KILL_AFTER) killing = kill(child).then(resolve);
        }).catch(reject);
      });
      await killed;
      const left = await outboxIds();
      const resent = [...confirmed].filter((id) => left.has(id));
      if (resent.length > 0) provingKills++;
      for (const id of resent) provenResends.add(id);
      if (left.size === 0)
        throw new Error('the outbox drained before two crashes could be proven; raise MESSAGES or lower KILL_AFTER');
    }

    const last = await startRelay(0, noop);
    try {
      await waitFor(async () => (await outboxIds()).size === 0, 120_000, 'the outbox to drain');
      await waitFor(() => deliveries.size === MESSAGES, 120_000, `${MESSAGES} distinct messages at the consumer`);
      await waitFor(() => [...provenResends].every((id) => (deliveries.get(id) ?? 0) >= 2), 60_000, 'every resend delivered');
    } finally {
      await kill(last);
    }

    expect(provingKills).toBe(2);
    expect(provenResends.size).toBeGreaterThan(0);
    expect(duplicates).toBeGreaterThanOrEqual(provenResends.size);
    const applied = await effects(h);
    expect(applied.size).toBe(MESSAGES);
    expect([...applied.values()].every((times) => times === 1)).toBe(true);
    expect(await inbox.deadLetters(h.db)).toEqual([]);
  }, 300_000);
});
