import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { createOutbox, migrate, type Outbox } from '../../../src/index.js';
import { syncStandbyPostgres } from '../../support/sync-standby.js';

/**
 * The logical explorer's world: an outbox table, its publication and one slot on the second local cluster, whose
 * synchronous standby never answers (test/support/sync-standby-pg.sh), so a producer's COMMIT can be left waiting
 * (in the WAL, streamed, invisible) for as long as the schedule says. Everything but those commits runs with
 * synchronous_commit = local.
 */
export interface LogicalWorld {
  schema: string;
  slot: string;
  publication: string;
  /** Connections that commit locally: relays, reads, resets. */
  localUrl: string;
  admin: Kysely<any>;
  /** Producers' connections: a commit waits for the standby unless the transaction says local. */
  producers: Kysely<any>;
  outbox: Outbox;
  /** Empties the outbox table between schedules (the slot goes on: what it streams again is no longer there). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export async function openLogicalWorld(): Promise<LogicalWorld> {
  const cluster = syncStandbyPostgres();
  const schema = `txo_lexplore_${randomBytes(4).toString('hex')}`;
  const admin = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: cluster.localUrl, max: 4 }) }) });
  const producers = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: cluster.url, max: 8 }) }) });
  // What an explorer killed mid-run left behind: a COMMIT still waiting for the standby (it holds back every slot
  // created after it) and its slot (which would keep WAL for ever). This cluster is the tests' own.
  await sql`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'`.execute(admin);
  await sql`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'txo_lexplore_%' AND NOT active`.execute(
    admin,
  );
  const publication = `${schema}_pub`;
  await migrate(admin, { dialect: 'postgres', schema, publication });
  const table = sql.id(schema, 'txoutbox');
  return {
    schema,
    slot: `${schema}_slot`,
    publication,
    localUrl: cluster.localUrl,
    admin,
    producers,
    outbox: createOutbox({ dialect: 'postgres', schema, mode: 'logical' }),
    async reset() {
      await sql`DELETE FROM ${table}`.execute(admin);
    },
    async close() {
      await sql`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE ${`${schema}%`} AND NOT active`.execute(
        admin,
      );
      await sql`DROP PUBLICATION IF EXISTS ${sql.id(publication)}`.execute(admin);
      await sql`DROP SCHEMA ${sql.id(schema)} CASCADE`.execute(admin);
      await producers.destroy();
      await admin.destroy();
    },
  };
}
