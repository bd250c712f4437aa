import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { sql, type Kysely } from 'kysely';
import type pg from 'pg';
import { tableNames, type TableNames } from '../../dialects/identifiers.js';
import type { RelayStore } from '../../dialects/dialect.js';
import { dialectFor } from '../../dialects/index.js';
import { setLongInterval, type LongTimer } from '../../timers.js';
import { resolveRelayOptions, type RelayOptions, type ResolvedRelayOptions } from '../options.js';
import type { RelayEvents } from '../events.js';
import { defaultPublication, defaultSlot, logicalNames, type LogicalNames } from './names.js';
import { DeferredRows } from './deferred-rows.js';
import { PartitionRunner } from './partition-runner.js';
import { SentCleanup } from '../sent-cleanup.js';
import { assertPartitionsMatch } from './partitions-check.js';
import type { ReplicationSource } from './slot-stream.js';
import { assertLogicalDecoding } from './slots.js';

/** Which slots this relay holds now. */
export interface LogicalRelayStatus {
  partitions: {
    slot: string;
    /** This relay streams from the slot now (false: it stands by, or the slot is missing). */
    owned: boolean;
    /** Rows streamed from this slot since the relay started. */
    streamed: number;
    /** Commit time of the oldest transaction streamed but not yet confirmed; null when all are. */
    oldestUnconfirmedCommit: Date | null;
  }[];
}

/**
 * The relay in mode 'logical': committed outbox inserts come from PostgreSQL's write-ahead log through a logical
 * replication slot (pgoutput), in commit order, instead of from claims on the table. One relay at a time holds a
 * slot; the others stand by and take over when it goes. See PartitionRunner for the protocol.
 */
export class LogicalRelay extends EventEmitter<RelayEvents & { owned: [slot: string, owned: boolean] }> {
  readonly instanceId: string;
  readonly names: LogicalNames;
  private readonly options: ResolvedRelayOptions;
  private readonly table: TableNames;
  private runners: PartitionRunner[] = [];
  private starting: Promise<void> | null = null;
  /** Deletes the sent rows kept for retainSentMs: the polling relay's cleanup, on the same table. */
  private readonly store: RelayStore;
  private cleanupTimer: LongTimer | null = null;
  private readonly sentCleanup: SentCleanup;

  constructor(options: RelayOptions<unknown>) {
    super();
    this.options = resolveRelayOptions(options);
    this.table = tableNames(this.options.table, this.options.schema);
    this.names = logicalNames(
      this.options.slot ?? defaultSlot(this.table),
      this.options.publication ?? defaultPublication(this.table),
      this.options.partitions,
    );
    this.instanceId = this.options.instanceId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.store = dialectFor(this.options.dialect).relayStore(this.options.db, this.table, {
      asyncCommit: this.options.asyncCommit,
    });
    this.sentCleanup = new SentCleanup(this.store, this.options, (error) => this.report(error));
  }

  /**
   * Checks that the server can decode its WAL and that the publications were made for this relay's partitions (a
   * clear error if not), then holds or stands by for each slot. Resolves once the relay is running; rejects (and
   * runs nothing) when logical decoding is unavailable or the partitions differ.
   */
  start(): Promise<void> {
    this.starting ??= this.begin().catch((error: unknown) => {
      this.starting = null;
      throw error;
    });
    return this.starting;
  }

  /** Stops streaming; publishes in flight get up to `drainMs` before they are aborted (their rows are streamed again). */
  async stop({ drainMs = 10_000 }: { drainMs?: number } = {}): Promise<void> {
    await this.starting?.catch(() => undefined);
    this.starting = null;
    this.cleanupTimer?.clear();
    this.cleanupTimer = null;
    const runners = this.runners;
    this.runners = [];
    await Promise.all(runners.map((runner) => runner.stop(drainMs)));
  }

  /** Looks for deferred rows that are due now (streamed rows need no wake-up; due ones are found on time anyway). */
  kick(): void {
    for (const runner of this.runners) runner.kick();
  }

  /**
   * Deletes sent rows past retainSentMs now, in small batches (the relay also does it every cleanupIntervalMs).
   * With retainSentMs 0 rows are deleted as they are marked, and this finds none.
   */
  cleanup(): Promise<number> {
    return this.sentCleanup.run();
  }

  status(): LogicalRelayStatus {
    return {
      partitions: this.runners.map((runner, index) => ({
        slot: this.names.slots[index]!,
        owned: runner.owned,
        streamed: runner.streamed,
        oldestUnconfirmedCommit: runner.oldestUnconfirmed(),
      })),
    };
  }

  private async begin(): Promise<void> {
    const db = this.options.db as Kysely<unknown>;
    await assertLogicalDecoding(db);
    await new DeferredRows(db, this.table, sql`true`).assertMigrated();
    await assertPartitionsMatch(db, this.table, this.names, this.options.publication ?? defaultPublication(this.table));
    const replication = await replicationSource(db, this.options.replication, this.instanceId);
    const token = `${this.instanceId}:${randomBytes(4).toString('hex')}`;
    this.runners = this.names.slots.map(
      (slot, partition) =>
        new PartitionRunner(db, {
          options: this.options,
          names: this.table,
          replication,
          slot,
          publication: this.names.publications[partition]!,
          partition,
          partitions: this.names.partitions,
          token,
          events: {
            published: (messages) => this.emit('published', messages),
            retrying: (messages) => this.emit('retrying', messages),
            dead: (messages) => this.emit('dead', messages),
            error: (error) => this.report(error),
            owned: (owned) => this.emit('owned', slot, owned),
          },
        }),
    );
    for (const runner of this.runners) runner.start();
    // Long-armed: cleanupIntervalMs is the user's, and an overflowed interval would clean up every millisecond.
    this.cleanupTimer = setLongInterval(() => void this.cleanup(), this.options.cleanupIntervalMs).unref();
  }

  private report(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else console.error(`[txoutbox relay ${this.instanceId}]`, error);
  }
}

/**
 * The replication connection: as given, or the server, database and user of db's own connections. A derived one is
 * named after the relay instance, so pg_stat_replication (and `slot status`) shows which relay streams the slot.
 */
async function replicationSource(
  db: Kysely<unknown>,
  given: ResolvedRelayOptions['replication'],
  instanceId: string,
): Promise<ReplicationSource> {
  if (given !== undefined) return given as ReplicationSource;
  const { rows } = await sql<{ host: string | null; port: number; database: string; user: string }>`
    SELECT host(inet_server_addr()) AS host, current_setting('port')::int AS port, current_database() AS database, current_user AS user`.execute(
    db,
  );
  const row = rows[0]!;
  const config: pg.ClientConfig = {
    port: row.port,
    database: row.database,
    user: row.user,
    application_name: applicationName(instanceId),
  };
  // NULL: db connects over a Unix socket; pg then uses PGHOST or its default, as db's own connections did.
  if (row.host !== null) config.host = row.host;
  if (process.env.PGPASSWORD !== undefined) config.password = process.env.PGPASSWORD;
  return config;
}

/** `txoutbox-relay <instanceId>`, cut to the 63 bytes the server keeps (it would truncate it anyway, mid-character). */
export function applicationName(instanceId: string): string {
  const bytes = Buffer.from(`txoutbox-relay ${instanceId}`, 'utf8');
  if (bytes.length <= 63) return bytes.toString('utf8');
  // Cut at a character boundary: drop continuation bytes (10xxxxxx) at the cut and the lead byte they belong to.
  let end = 63;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}
