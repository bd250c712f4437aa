import { randomBytes } from 'node:crypto';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import mysqlPromise from 'mysql2/promise';
import pg from 'pg';
import { inject } from 'vitest';
import { dialectFor } from '../../src/dialects/index.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import { createOutbox, migrate, type DialectName, type Outbox, type OutboxOptions } from '../../src/index.js';

/** An outbox row as both databases return it, normalized for assertions. */
export interface OutboxRow {
  seq: bigint;
  id: string;
  topic: string;
  key: string | null;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  state: string;
  /** Heads its key (true), waits behind the head (false), or is not sequenced by a relay yet (null). */
  ready: boolean | null;
  attempts: number;
  nextAttemptAt: Date;
  leaseOwner: string | null;
  leaseUntil: Date | null;
  lastError: string | null;
  createdAt: Date;
  sentAt: Date | null;
}

/** A raw driver connection (not Kysely) with an open or closed transaction, for the pg / mysql2 paths. */
export interface RawConnection {
  /** The object handed to enqueue: a pg PoolClient, or a mysql2 connection (callback or promise API). */
  handle: unknown;
  query(text: string): Promise<void>;
  release(): Promise<void>;
}

/**
 * Everything a test needs for one dialect: its own schema (PostgreSQL) or database (MySQL), migrated; a Kysely
 * instance on it; an outbox; a business table; and readers that return rows in one shape for both databases.
 */
export interface Harness {
  dialect: DialectName;
  schema: string;
  db: Kysely<any>;
  outbox: Outbox;
  /** A second outbox on the same tables with other options. */
  createOutbox(options?: Omit<OutboxOptions, 'dialect' | 'schema'>): Outbox;
  rows(): Promise<OutboxRow[]>;
  /** Per key with unsent (or dead) messages: how many head it. The relay keeps this at one. */
  heads(): Promise<Map<string, number>>;
  /** Sequences arrivals the way a relay's claim does, leasing nothing. */
  sequence(): Promise<void>;
  /** Inserts a business row (`orders`) in the given Kysely transaction. */
  insertOrder(trx: Kysely<any>, id: string): Promise<void>;
  orderIds(): Promise<string[]>;
  rawConnection(kind?: 'callback' | 'promise'): Promise<RawConnection>;
  /** The database's current time, to compare stored times without trusting the test machine's clock. */
  now(): Promise<Date>;
  destroy(): Promise<void>;
}

export const DIALECTS: DialectName[] = ['postgres', 'mysql'];

export async function createHarness(dialect: DialectName, poolSize = 10): Promise<Harness> {
  const schema = `txo_${randomBytes(5).toString('hex')}`;
  return dialect === 'postgres' ? postgresHarness(schema, poolSize, inject('pgUrl')) : mysqlHarness(schema, poolSize);
}

/** A PostgreSQL harness on another server than the suite's (e.g. the synchronous-standby cluster). */
export async function createPostgresHarnessAt(url: string, poolSize = 10): Promise<Harness> {
  return postgresHarness(`txo_${randomBytes(5).toString('hex')}`, poolSize, url);
}

async function postgresHarness(schema: string, poolSize: number, url: string): Promise<Harness> {
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  await migrate(db, { dialect: 'postgres', schema });
  await sql`CREATE TABLE ${sql.id(schema, 'orders')} (id text PRIMARY KEY)`.execute(db);
  const table = (name: string) => sql.id(schema, name);
  return {
    dialect: 'postgres',
    schema,
    db,
    outbox: createOutbox({ dialect: 'postgres', schema }),
    createOutbox: (options = {}) => createOutbox({ ...options, dialect: 'postgres', schema }),
    async rows() {
      const { rows } = await sql<Record<string, unknown>>`SELECT * FROM ${table('txoutbox')} ORDER BY seq`.execute(db);
      return rows.map((row) => normalize(row));
    },
    heads: () => headsOf(db, table('txoutbox')),
    sequence: () => sequenceArrivals('postgres', db, schema),
    async insertOrder(trx, id) {
      await sql`INSERT INTO ${table('orders')} (id) VALUES (${id})`.execute(trx);
    },
    async orderIds() {
      const { rows } = await sql<{ id: string }>`SELECT id FROM ${table('orders')} ORDER BY id`.execute(db);
      return rows.map((row) => row.id);
    },
    async rawConnection() {
      const client = await pool.connect();
      return {
        handle: client,
        query: async (text) => void (await client.query(text)),
        release: async () => client.release(),
      };
    },
    async now() {
      const { rows } = await sql<{ now: Date }>`SELECT clock_timestamp() AS now`.execute(db);
      return rows[0]!.now;
    },
    async destroy() {
      await sql`DROP SCHEMA ${sql.id(schema)} CASCADE`.execute(db);
      await db.destroy();
    },
  };
}

async function mysqlHarness(schema: string, poolSize: number): Promise<Harness> {
  const url = inject('mysqlUrl');
  // DATETIME columns hold UTC; reading them as UTC keeps the tests independent of the machine's time zone.
  const pool = mysql.createPool({ uri: url, connectionLimit: poolSize, timezone: 'Z' });
  const db = new Kysely<any>({ dialect: new MysqlDialect({ pool }) });
  await migrate(db, { dialect: 'mysql', schema });
  await sql`CREATE TABLE ${sql.id(schema, 'orders')} (id VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB`.execute(db);
  const table = (name: string) => sql.id(schema, name);
  return {
    dialect: 'mysql',
    schema,
    db,
    outbox: createOutbox({ dialect: 'mysql', schema }),
    createOutbox: (options = {}) => createOutbox({ ...options, dialect: 'mysql', schema }),
    async rows() {
      const { rows } = await sql<Record<string, unknown>>`SELECT * FROM ${table('txoutbox')} ORDER BY seq`.execute(db);
      return rows.map((row) => normalize(row));
    },
    heads: () => headsOf(db, table('txoutbox')),
    sequence: () => sequenceArrivals('mysql', db, schema),
    async insertOrder(trx, id) {
      await sql`INSERT INTO ${table('orders')} (id) VALUES (${id})`.execute(trx);
    },
    async orderIds() {
      const { rows } = await sql<{ id: string }>`SELECT id FROM ${table('orders')} ORDER BY id`.execute(db);
      return rows.map((row) => row.id);
    },
    async rawConnection(kind = 'callback') {
      if (kind === 'promise') {
        const connection = await mysqlPromise.createConnection({ uri: url, timezone: 'Z' });
        return {
          handle: connection,
          query: async (text) => void (await connection.query(text)),
          release: () => connection.end(),
        };
      }
      const connection = await new Promise<mysql.PoolConnection>((resolve, reject) =>
        pool.getConnection((error, conn) => (error ? reject(error) : resolve(conn))),
      );
      return {
        handle: connection,
        query: (text) =>
          new Promise<void>((resolve, reject) => connection.query(text, (error) => (error ? reject(error) : resolve()))),
        release: async () => connection.release(),
      };
    },
    async now() {
      const { rows } = await sql<{ now: Date }>`SELECT UTC_TIMESTAMP(6) AS now`.execute(db);
      return rows[0]!.now;
    },
    async destroy() {
      await sql`DROP DATABASE ${sql.id(schema)}`.execute(db);
      await db.destroy();
    },
  };
}

async function headsOf(db: Kysely<any>, table: ReturnType<typeof sql.id>): Promise<Map<string, number>> {
  const { rows } = await sql<{ msg_key: unknown; heads: unknown }>`
    SELECT msg_key, SUM(CASE WHEN ready THEN 1 ELSE 0 END) AS heads FROM ${table}
    WHERE msg_key IS NOT NULL AND state IN ('pending', 'dead') GROUP BY msg_key`.execute(db);
  return new Map(rows.map((row) => [text(row.msg_key)!, Number(row.heads)]));
}

async function sequenceArrivals(dialect: DialectName, db: Kysely<any>, schema: string): Promise<void> {
  await dialectFor(dialect).relayStore(db, tableNames('txoutbox', schema)).claim({ count: 0, bytes: 0 }, 'sequencer', 1000);
}

const text = (value: unknown): string | null =>
  value === null || value === undefined ? null : Buffer.isBuffer(value) ? value.toString('utf8') : String(value);

function normalize(row: Record<string, unknown>): OutboxRow {
  const headers = typeof row.headers === 'string' ? JSON.parse(row.headers) : row.headers;
  return {
    seq: BigInt(row.seq as string | number),
    id: text(row.id)!,
    topic: text(row.topic)!,
    key: text(row.msg_key),
    payload: row.payload as Buffer,
    contentType: text(row.content_type)!,
    headers: headers as Record<string, string>,
    state: text(row.state)!,
    ready: row.ready === null ? null : row.ready === true || row.ready === 1,
    attempts: Number(row.attempts),
    nextAttemptAt: row.next_attempt_at as Date,
    leaseOwner: text(row.lease_owner),
    leaseUntil: (row.lease_until as Date | null) ?? null,
    lastError: text(row.last_error),
    createdAt: row.created_at as Date,
    sentAt: (row.sent_at as Date | null) ?? null,
  };
}
