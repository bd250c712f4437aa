import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox } from '../../src/index.js';
import { AMQP_URL, QueueConsumer, randomName, withChannel } from '../support/brokers/rabbitmq-fixture.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { waitFor } from '../support/relay-helpers.js';

describe('txoutbox dead list|show|retry|discard (the CLI against PostgreSQL and RabbitMQ)', () => {
  const schema = `cli_dead_${randomBytes(4).toString('hex')}`;
  // No queue has this name yet: RabbitMQ returns the messages (mandatory), so they are dead-lettered at once.
  const queue = randomName('txoutbox-cli-dead');
  const topic = `invoices.${randomBytes(3).toString('hex')}`;
  let db: Kysely<any>;
  let cli: CliWorkspace;
  let consumer: QueueConsumer | undefined;
  const outbox = createOutbox({ dialect: 'postgres', schema });

  beforeAll(async () => {
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'billing', dialect: 'postgres', url: inject('pgUrl'), schema }],
      brokers: { rabbit: { type: 'rabbitmq', url: AMQP_URL, routes: { [topic]: { exchange: '', routingKey: queue } } } },
      relay: { pollIntervalMs: 100 },
      http: { enabled: false },
    });
    expect((await cli.run(['migrate'])).code).toBe(0);
  });
  afterAll(async () => {
    await cli?.cleanup();
    await consumer?.close();
    await withChannel((channel) => channel.deleteQueue(queue)).catch(() => {});
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db?.destroy();
  });

  const deadList = async (...filters: string[]) => {
    const result = await cli.run(['dead', 'list', '--json', ...filters]);
    expect(result.code, result.stderr).toBe(0);
    return (
      JSON.parse(result.stdout) as { deadLetters: { id: string; key: string | null; holdsKey: boolean; lastError: string }[] }
    ).deadLetters;
  };

  it('lists and shows dead letters, asks before bulk actions, retries one so it is published, and discards the rest', async () => {
    const ids = await db.transaction().execute(async (trx) =>
      (
        await outbox.enqueue(trx, [
          { topic, key: 'inv-1', payload: { n: 1 }, headers: { 'x-tenant': 'acme' } },
          { topic, key: 'inv-1', payload: { n: 2 } },
          { topic, key: 'inv-2', payload: { n: 3 } },
        ])
      ).map((r) => r.id),
    );
    const relay = cli.spawn(['relay']);
    await relay.waitForLog((line) => line.msg === 'dead-lettered (txoutbox dead list)' && line.messageId === ids[2]);
    await relay.waitForLog((line) => line.msg === 'dead-lettered (txoutbox dead list)' && line.messageId === ids[0]);

    // inv-1's head is dead and holds its key (block-key), so its second message waits behind it.
    const dead = await deadList();
    expect(dead.map((d) => d.id)).toEqual([ids[0], ids[2]]);
    expect(dead[0]).toMatchObject({ key: 'inv-1', holdsKey: true, lastError: expect.stringContaining('NO_ROUTE') });
    expect((await deadList('--key', 'inv-2')).map((d) => d.id)).toEqual([ids[2]]);
    expect(await deadList('--error', 'no such thing')).toEqual([]);

    const show = await cli.run(['dead', 'show', ids[0]!]);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(`id:          ${ids[0]}`);
    expect(show.stdout).toContain('"x-tenant":"acme"');
    expect(show.stdout).toContain('{"n":1}');
    const unknown = await cli.run(['dead', 'show', 'no-such-id']);
    expect(unknown.code).toBe(5);
    expect(unknown.stderr).toContain('No dead letter with id "no-such-id"');

    // Bulk actions need a yes; without a terminal to ask, --yes is required and nothing changes.
    const unconfirmed = await cli.run(['dead', 'retry', '--topic', topic]);
    expect(unconfirmed.code).toBe(6);
    expect(unconfirmed.stderr).toContain('2 dead letters match');
    expect(unconfirmed.stderr).toContain('Pass --yes');
    const nothing = await cli.run(['dead', 'retry']);
    expect(nothing.code).toBe(2);
    expect((await deadList()).length).toBe(2);

    // Make the destination exist, then retry the head of inv-1: it is published, and the message behind it too.
    await withChannel((channel) => channel.assertQueue(queue, { durable: true }));
    consumer = await QueueConsumer.start(queue);
    const retried = await cli.run(['dead', 'retry', ids[0]!]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain('Retried 1 dead letter(s)');
    await waitFor(() => consumer!.received().length === 2, 20_000, 'the retried message and the one behind it');
    expect(consumer.received().map((m) => m.id)).toEqual([ids[0], ids[1]]);
    expect((await deadList()).map((d) => d.id)).toEqual([ids[2]]);

    const discarded = await cli.run(['dead', 'discard', '--all', '--yes']);
    expect(discarded.code, discarded.stderr).toBe(0);
    expect(discarded.stdout).toContain('Discarded 1 dead letter(s)');
    expect(await deadList()).toEqual([]);
    const status = JSON.parse((await cli.run(['status', '--json'])).stdout) as {
      tables: { topic: string; dead: number; pending: number }[];
    };
    expect(status.tables.find((t) => t.topic === topic)).toMatchObject({ dead: 0, pending: 0 });

    relay.kill('SIGTERM');
    expect((await relay.exited).code).toBe(0);
  });
});
