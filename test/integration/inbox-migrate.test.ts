import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, createInbox, migrateInbox } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';

describe.each(DIALECTS)('migrateInbox on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect);
  });
  afterAll(async () => h?.destroy());

  const tablesIn = async (schema: string): Promise<string[]> => {
    const { rows } = await sql<{ name: string }>`
      SELECT table_name AS name FROM information_schema.tables WHERE table_schema = ${schema}`.execute(h.db);
    return rows.map((row) => row.name).sort();
  };

  it('creates the inbox tables with their own history next to the outbox, and does nothing when run again', async () => {
    expect((await migrateInbox(h.db, { dialect, schema: h.schema })).map((r) => r.migrationName)).toEqual(['001_create_inbox']);
    expect(await migrateInbox(h.db, { dialect, schema: h.schema })).toEqual([]);
    expect(await tablesIn(h.schema)).toEqual(
      expect.arrayContaining([
        'txoutbox',
        'txoutbox_migrations',
        'txoutbox_inbox',
        'txoutbox_inbox_dead',
        'txoutbox_inbox_migrations',
      ]),
    );
  });

  it('serves a service that has only the inbox, under a table name of its own', async () => {
    const schema = `${h.schema}_in_${randomBytes(2).toString('hex')}`;
    try {
      await migrateInbox(h.db, { dialect, schema, table: 'billing_inbox' });
      expect((await tablesIn(schema)).filter((name) => !name.includes('migration'))).toEqual([
        'billing_inbox',
        'billing_inbox_dead',
      ]);
      const inbox = createInbox({ dialect, schema, table: 'billing_inbox' });
      const deliver = () =>
        h.db.transaction().execute((trx) => inbox.processOnce(trx, { consumer: 'c', messageId: 'm' }, () => 'ran'));
      expect(await deliver()).toEqual({ duplicate: false, result: 'ran' });
      expect(await deliver()).toEqual({ duplicate: true });
    } finally {
      await sql.raw(dialect === 'postgres' ? `DROP SCHEMA ${schema} CASCADE` : `DROP DATABASE ${schema}`).execute(h.db);
    }
  });

  it('says to run the migrations when the inbox table is missing', async () => {
    const inbox = createInbox({ dialect, schema: h.schema, table: 'never_migrated' });
    const error = await h.db
      .transaction()
      .execute((trx) => inbox.processOnce(trx, { consumer: 'c', messageId: 'm' }, () => 1))
      .catch((e: unknown) => e);
    expect(String(error)).toMatch(/never_migrated/);
  });

  it('refuses bad options with a ConfigError naming the option', () => {
    expect(() => createInbox({ dialect, table: 'bad-name' })).toThrow(ConfigError);
    expect(() => createInbox({ dialect, retentionMs: 0 })).toThrow(/retentionMs/);
    expect(() => createInbox({ dialect: 'oracle' as never })).toThrow(/dialect must be one of postgres, mysql/);
    expect(() => createInbox({ dialect, extra: 1 } as never)).toThrow(/extra/);
    return expect(migrateInbox(h.db, { dialect, table: 'x; DROP' })).rejects.toThrow(/table/);
  });
});
