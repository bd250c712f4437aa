import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox, createRelay, MemoryBroker, migrate, type Relay } from '../../src/index.js';
import { notifyChannel } from '../../src/dialects/notify-channel.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import { waitFor } from '../support/relay-helpers.js';

/** PostgreSQL channel names are identifiers: at most 63 bytes (NAMEDATALEN - 1). */
const MAX_CHANNEL_BYTES = 63;

describe('the NOTIFY channel of an outbox whose schema and table names are long (PostgreSQL)', () => {
  // 48 characters each, the most the options allow: "<schema>.<table>" would be 97 bytes.
  const schema = `txo_${randomBytes(5).toString('hex')}`.padEnd(48, 's');
  const table = 'outbox_'.padEnd(48, 't');
  let db: Kysely<any>;
  const relays: Relay[] = [];
  beforeAll(async () => {
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    await migrate(db, { dialect: 'postgres', schema, table });
  });
  afterAll(async () => {
    await Promise.all(relays.map((relay) => relay.stop()));
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db?.destroy();
  });

  it('is short enough, stable, different per table, and unchanged for names that already fit', () => {
    const long = notifyChannel(tableNames(table, schema));
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(MAX_CHANNEL_BYTES);
    expect(notifyChannel(tableNames(table, schema))).toBe(long);
    expect(notifyChannel(tableNames(`${table.slice(0, -1)}u`, schema))).not.toBe(long);
    expect(notifyChannel(tableNames('txoutbox', null))).toBe('public.txoutbox');
    expect(notifyChannel(tableNames('orders_outbox', 'shop'))).toBe('shop.orders_outbox');
  });

  it('lets enqueue commit (one message and a batch) and wakes a listening relay', async () => {
    const broker = new MemoryBroker();
    const relay = createRelay({
      db,
      dialect: 'postgres',
      schema,
      table,
      broker,
      listen: inject('pgUrl'),
      pollIntervalMs: 60_000,
    });
    const errors: Error[] = [];
    relay.on('error', (error) => errors.push(error));
    relay.start();
    relays.push(relay);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const outbox = createOutbox({ dialect: 'postgres', schema, table });
    await db.transaction().execute((trx) => outbox.enqueue(trx, { id: 'one', topic: 't', payload: 1 }));
    await waitFor(() => broker.accepted.length === 1, 5000, 'the notified publish');
    await db.transaction().execute((trx) =>
      outbox.enqueue(trx, [
        { id: 'b1', topic: 't', key: 'k', payload: 2 },
        { id: 'b2', topic: 't', payload: 3 },
      ]),
    );
    await waitFor(() => broker.accepted.length === 3, 5000, 'the notified batch');
    expect(errors).toEqual([]);
  });
});
