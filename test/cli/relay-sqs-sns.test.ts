import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox } from '../../src/index.js';
import { Fauxqs, FAUXQS_CLIENT, QueueReader, uniqueName } from '../support/brokers/fauxqs-fixture.js';
import { cliWorkspace, metricValue, type CliWorkspace } from '../support/cli.js';
import { waitFor } from '../support/relay-helpers.js';

/** The sidecar with `type: sqs` and `type: sns` brokers, against a fauxqs of this file's own. */
describe('txoutbox relay with SQS and SNS brokers (fauxqs)', () => {
  const schema = `cli_aws_${randomBytes(4).toString('hex')}`;
  const emulator = new Fauxqs({ persistent: false });
  let db: Kysely<any>;
  let cli: CliWorkspace;
  let queue: { queueUrl: string };
  let subscribed: { queueUrl: string };
  const outbox = createOutbox({ dialect: 'postgres', schema });

  beforeAll(async () => {
    await emulator.start();
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    queue = emulator.api.createQueue(`${uniqueName('cli')}.fifo`, { attributes: { FifoQueue: 'true' } });
    const topic = uniqueName('cli-topic');
    const { topicArn } = emulator.api.createTopic(topic);
    const sub = uniqueName('cli-sub');
    subscribed = emulator.api.createQueue(sub);
    emulator.api.subscribe({ topic, queue: sub, attributes: { RawMessageDelivery: 'true' } });
    const clientConfig = { ...FAUXQS_CLIENT, endpoint: emulator.address };
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema }],
      brokers: {
        queue: { type: 'sqs', clientConfig, routes: { 'orders.placed': queue.queueUrl } },
        topic: { type: 'sns', clientConfig, topicArn },
      },
      routes: { 'orders.*': 'queue', '*': 'topic' },
      relay: { pollIntervalMs: 100 },
      http: { port: 0 },
    });
    expect((await cli.run(['migrate'])).code).toBe(0);
  });
  afterAll(async () => {
    await cli?.cleanup();
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db?.destroy();
    await emulator.destroy();
  });

  it('relays to an SQS FIFO queue and an SNS topic by the routes, and /readyz and /metrics show both brokers', async () => {
    const relay = cli.spawn(['relay']);
    const http = await relay.httpUrl();
    const ready = (await (await fetch(`${http}/readyz`)).json()) as { checks: { kind: string; name: string; ok: boolean }[] };
    expect(ready.checks.filter((c) => c.kind === 'broker')).toEqual([
      expect.objectContaining({ name: 'queue', ok: true }),
      expect.objectContaining({ name: 'topic', ok: true }),
    ]);
    const ids = await db.transaction().execute(async (trx) =>
      (
        await outbox.enqueue(trx, [
          { topic: 'orders.placed', key: 'o-1', payload: { n: 1 } },
          { topic: 'orders.placed', key: 'o-1', payload: { n: 2 } },
          { topic: 'customers.created', payload: { c: 1 } },
        ])
      ).map((r) => r.id),
    );
    const client = emulator.sqsClient();
    const fromQueue = new QueueReader(client, queue.queueUrl);
    const fromTopic = new QueueReader(client, subscribed.queueUrl);
    await waitFor(async () => (await fromQueue.all()).length === 2 && (await fromTopic.all()).length === 1, 30_000, 'all three');
    expect((await fromQueue.all()).map((m) => m.id)).toEqual(ids.slice(0, 2));
    expect((await fromTopic.all()).map((m) => m.id)).toEqual([ids[2]]);
    const metrics = await (await fetch(`${http}/metrics`)).text();
    expect(metricValue(metrics, 'txoutbox_ready', { kind: 'broker', name: 'queue' })).toBe(1);
    expect(metricValue(metrics, 'txoutbox_ready', { kind: 'broker', name: 'topic' })).toBe(1);
    client.destroy();
    relay.kill();
    expect((await relay.exited).code).toBe(0);
  }, 60_000);

  it('refuses a bad sqs or sns option at startup, naming the broker and the option (exit 2)', async () => {
    const bad = await cliWorkspace();
    try {
      await bad.writeConfig({
        databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema }],
        brokers: { q: { type: 'sqs', queueUrl: 'orders' } },
      });
      const result = await bad.run(['relay']);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(
        /brokers\.q: Invalid createSqsBroker options: queueUrl: "orders" is not an http\(s\) queue URL/,
      );
    } finally {
      await bad.cleanup();
    }
  }, 60_000);
});
