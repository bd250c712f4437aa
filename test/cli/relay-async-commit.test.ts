import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox } from '../../src/index.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { waitFor } from '../support/relay-helpers.js';

/**
 * `asyncCommit` in the sidecar's config reaches each table's relay: its bookkeeping transactions (claims, sent
 * marks) run with synchronous_commit off, so their commits do not wait for the WAL flush, or keep the server's
 * setting when it is false. A trigger on each outbox table records the setting inside the transaction that writes.
 */
describe('txoutbox relay with relay.asyncCommit (PostgreSQL)', () => {
  const schema = `cli_async_${randomBytes(4).toString('hex')}`;
  let db: Kysely<any>;
  let cli: CliWorkspace;

  beforeAll(async () => {
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [
        {
          name: 'main',
          dialect: 'postgres',
          url: inject('pgUrl'),
          schema,
          tables: [{ table: 'fast', relay: { asyncCommit: true } }, { table: 'durable' }],
        },
      ],
      brokers: { mem: { type: 'memory' } },
      relay: { asyncCommit: false, pollIntervalMs: 100, batchSize: 5 },
      http: { enabled: false },
    });
  });

  afterAll(async () => {
    await cli?.cleanup();
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db?.destroy();
  });

  it('commits the bookkeeping of a table with asyncCommit true without waiting for the flush, and of one with false waiting', async (context) => {
    const { rows: setting } = await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(db);
    if (setting[0]!.synchronous_commit !== 'on') {
      return context.skip(`this PostgreSQL runs with synchronous_commit=${setting[0]!.synchronous_commit}: no commit waits`);
    }
    const migrated = await cli.run(['migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
    await sql`CREATE TABLE ${sql.id(schema, 'writes')} (tbl text NOT NULL, kind text NOT NULL, sync text NOT NULL)`.execute(db);
    // What each row write is: the producer's insert, the relay's claim, sent mark or promotion of a key's next
    // message, or its sequencing of a keyed arrival.
    await sql`
      CREATE FUNCTION ${sql.id(schema, 'record_write')}() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO ${sql.id(schema, 'writes')} VALUES (
          TG_TABLE_NAME,
          CASE
            WHEN TG_OP <> 'UPDATE' THEN lower(TG_OP)
            WHEN NEW.state = 'sent' AND OLD.state <> 'sent' THEN 'sent mark'
            WHEN NEW.lease_owner IS NOT NULL AND NEW.lease_owner IS DISTINCT FROM OLD.lease_owner THEN 'claim'
            WHEN OLD.ready IS NULL THEN 'sequencing'
            WHEN NEW.ready AND NOT OLD.ready THEN 'promotion'
            ELSE 'other'
          END,
          current_setting('synchronous_commit'));
        RETURN NULL;
      END $$`.execute(db);
    for (const table of ['fast', 'durable']) {
      await sql`
        CREATE TRIGGER record_write AFTER INSERT OR UPDATE OR DELETE ON ${sql.id(schema, table)}
        FOR EACH ROW EXECUTE FUNCTION ${sql.id(schema, 'record_write')}()`.execute(db);
    }

    const relay = cli.spawn(['relay']);
    await relay.waitForLog((line) => typeof line.msg === 'string' && line.msg.startsWith('relaying'));
    for (const table of ['fast', 'durable']) {
      const outbox = createOutbox({ dialect: 'postgres', schema, table });
      await db
        .transaction()
        .execute((trx) =>
          outbox.enqueue(trx, [
            ...Array.from({ length: 10 }, (_, i) => ({ topic: 't', payload: i })),
            ...Array.from({ length: 10 }, (_, i) => ({ topic: 't', key: `k${i % 3}`, payload: i })),
          ]),
        );
    }
    // Sent rows are kept a minute by the sidecar's default retention: each one's last write is its sent mark.
    const unsent = async () => {
      const { rows } = await sql<{ n: number }>`
        SELECT (SELECT count(*) FROM ${sql.id(schema, 'fast')} WHERE state <> 'sent')::int
             + (SELECT count(*) FROM ${sql.id(schema, 'durable')} WHERE state <> 'sent')::int AS n`.execute(db);
      return rows[0]!.n;
    };
    await waitFor(async () => (await unsent()) === 0, 30_000, 'both tables to be relayed');
    relay.kill('SIGTERM');
    expect((await relay.exited).code).toBe(0);

    const { rows } = await sql<{ tbl: string; kind: string; sync: string; n: number }>`
      SELECT tbl, kind, sync, count(*)::int AS n FROM ${sql.id(schema, 'writes')}
      GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`.execute(db);
    // Each message is claimed and marked sent once (no failures here); the producer's inserts keep the server's
    // setting. A key's next message is promoted in the transaction that marks its predecessor (how many are
    // promoted rather than sequenced straight to head depends on timing).
    const writes = (tbl: string, sync: string) => [
      { tbl, kind: 'claim', sync, n: 20 },
      { tbl, kind: 'insert', sync: 'on', n: 20 },
      { tbl, kind: 'sent mark', sync, n: 20 },
    ];
    const timed = ['promotion', 'sequencing'];
    expect(rows.filter((row) => !timed.includes(row.kind))).toEqual([...writes('durable', 'on'), ...writes('fast', 'off')]);
    // Promotions and sequencing (which makes each key's first arrival its head) follow the table's setting too.
    const bookkeeping = rows.filter((row) => timed.includes(row.kind));
    expect(bookkeeping.some((row) => row.kind === 'sequencing' && row.tbl === 'fast')).toBe(true);
    expect(bookkeeping.filter((row) => row.sync !== (row.tbl === 'fast' ? 'off' : 'on'))).toEqual([]);
  });
});
