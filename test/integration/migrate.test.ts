import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { KEY_LOCK_STRIPES } from '../../src/dialects/mysql/key-locks.js';
import { createOutbox, migrate, migrateInbox } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';

const run = promisify(execFile);

describe.each(DIALECTS)('migrate on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect);
  });
  afterAll(async () => h?.destroy());

  const tablesIn = async (schema: string): Promise<string[]> => {
    const { rows } = await sql<{ name: string }>`
      SELECT table_name AS name FROM information_schema.tables WHERE table_schema = ${schema} ORDER BY table_name`.execute(h.db);
    return rows.map((row) => row.name).sort();
  };

  it('does nothing when run again', async () => {
    const before = await tablesIn(h.schema);
    expect(await migrate(h.db, { dialect, schema: h.schema })).toEqual([]);
    expect(await tablesIn(h.schema)).toEqual(before);
  });

  it('applies each file once when two processes migrate the same fresh table at the same time', async () => {
    const url = dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl');
    const table = `race_${randomBytes(3).toString('hex')}`;
    const script = new URL('../support/migrate-process.ts', import.meta.url).pathname;
    const tsx = new URL('../../node_modules/.bin/tsx', import.meta.url).pathname;
    const outputs = await Promise.all([1, 2].map(() => run(tsx, [script, dialect, url, h.schema, table])));
    const applied = outputs.map(({ stdout }) => JSON.parse(stdout) as string[]);
    const files = ['001_create_outbox', '002_relay_sequences_keys', '003_logical_slots', '004_logical_clean_stop', '005_logical_deferred'];
    expect(applied.flat()).toEqual(files);

    const history = await sql<{ name: string }>`SELECT name FROM ${sql.id(h.schema, `${table}_migrations`)}`.execute(h.db);
    expect(history.rows.map((row) => row.name).sort()).toEqual(files);
    expect(await tablesIn(h.schema)).toEqual(expect.arrayContaining([table]));
    expect(await tablesIn(h.schema)).not.toContain(`${table}_keys`);
  });

  it('creates a custom table in a schema of its own and enqueue works on it', async () => {
    const schema = `${h.schema}_b`;
    try {
      await migrate(h.db, { dialect, schema, table: 'orders_outbox' });
      const expected =
        dialect === 'postgres' ? ['orders_outbox', 'orders_outbox_slots'] : ['orders_outbox', 'orders_outbox_key_locks'];
      expect((await tablesIn(schema)).filter((name) => !name.includes('migration'))).toEqual(expected);
      const outbox = createOutbox({ dialect, schema, table: 'orders_outbox' });
      await h.db.transaction().execute((trx) => outbox.enqueue(trx, { id: 'in-custom', topic: 't', key: 'k', payload: 1 }));
      const { rows } = await sql<{ n: number | string }>`SELECT count(*) AS n FROM ${sql.id(schema, 'orders_outbox')}`.execute(
        h.db,
      );
      expect(Number(rows[0]!.n)).toBe(1);
      expect(await h.rows()).toEqual([]);
    } finally {
      await sql.raw(dialect === 'postgres' ? `DROP SCHEMA ${schema} CASCADE` : `DROP DATABASE ${schema}`).execute(h.db);
    }
  });

  it('says to run the migrations when the outbox table is missing', async () => {
    const outbox = createOutbox({ dialect, schema: h.schema, table: 'never_migrated' });
    const error = await h.db
      .transaction()
      .execute((trx) => outbox.enqueue(trx, { topic: 't', payload: 1 }))
      .catch((e: unknown) => e);
    expect(String(error)).toMatch(/never_migrated/);
  });
});

describe.each(DIALECTS)('migrate on %s while another schema is dropped', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect);
  });
  afterAll(async () => h?.destroy());

  it('looks only at its own schema and tables, so the drop cannot fail it', async () => {
    const other = `${h.schema}_gone`;
    const fresh = `${h.schema}_fresh`;
    const drop = (schema: string) => sql.raw(`DROP SCHEMA IF EXISTS ${schema}${dialect === 'postgres' ? ' CASCADE' : ''}`);
    await sql`CREATE SCHEMA ${sql.id(other)}`.execute(h.db);
    await sql`CREATE TABLE ${sql.id(other, 't')} (id serial PRIMARY KEY)`.execute(h.db);
    try {
      const results = await h.db.connection().execute(async (conn) => {
        // Deterministically the moment another process drops its schema while migrate reads the catalog: a snapshot
        // older than the drop still lists the schema, whose name no longer resolves (PostgreSQL: REPEATABLE READ's
        // snapshot; MySQL reads its catalog outside any snapshot, so the drop is simply seen).
        const begin =
          dialect === 'postgres' ? 'BEGIN ISOLATION LEVEL REPEATABLE READ' : 'START TRANSACTION WITH CONSISTENT SNAPSHOT';
        await sql.raw(begin).execute(conn);
        try {
          await sql`SELECT count(*) FROM ${sql.id(h.schema, 'txoutbox')}`.execute(conn);
          await drop(other).execute(h.db);
          return [
            await migrate(conn, { dialect, schema: h.schema }),
            await migrate(conn, { dialect, schema: fresh, table: 'fresh' }),
            await migrateInbox(conn, { dialect, schema: fresh }),
          ];
        } finally {
          // Migrate committed the snapshot's transaction (or failed in it): the connection goes back clean either way.
          await sql.raw('ROLLBACK').execute(conn);
        }
      });
      expect(results[0]).toEqual([]);
      for (const applied of results.slice(1)) {
        expect(applied.length).toBeGreaterThan(0);
        expect(applied.map((result) => result.status)).toEqual(applied.map(() => 'Success'));
      }
    } finally {
      await drop(other).execute(h.db);
      await drop(fresh).execute(h.db);
    }
  });
});

describe('migrate on mysql: key lock stripes', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('mysql');
  });
  afterAll(async () => h?.destroy());

  it('fills exactly the key lock stripes that relays hash keys into, and the sequencer row', async () => {
    const { rows } = await sql<{ n: number | string; top: number }>`
      SELECT count(*) AS n, max(stripe) AS top FROM ${sql.id(h.schema, 'txoutbox_key_locks')} WHERE stripe < 65535`.execute(h.db);
    expect(Number(rows[0]!.n)).toBe(KEY_LOCK_STRIPES);
    expect(Number(rows[0]!.top)).toBe(KEY_LOCK_STRIPES - 1);
    const sequencer = await sql<{ n: number | string }>`
      SELECT count(*) AS n FROM ${sql.id(h.schema, 'txoutbox_key_locks')} WHERE stripe = 65535`.execute(h.db);
    expect(Number(sequencer.rows[0]!.n)).toBe(1);
  });
});
