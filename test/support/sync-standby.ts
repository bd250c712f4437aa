import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Outbox, OutboxMessage } from '../../src/index.js';

const PORT = Number(process.env.SYNC_STANDBY_PG_PORT ?? 5433);

/**
 * The second PostgreSQL cluster (test/support/sync-standby-pg.sh), started if it is not running: every COMMIT there
 * waits for a synchronous standby that never answers, so a committed transaction is in the WAL (and streamed to a
 * slot) but not visible to other sessions until its wait is cancelled.
 *
 * `url`: connections whose commits wait (producers). `localUrl`: connections that commit locally (synchronous_commit
 * = local): migrations, the relay's own writes, the test's reads.
 */
export function syncStandbyPostgres(): { url: string; localUrl: string } {
  execFileSync('bash', [fileURLToPath(new URL('./sync-standby-pg.sh', import.meta.url))], { stdio: 'pipe', timeout: 120_000 });
  const url = `postgres://root@127.0.0.1:${PORT}/test`;
  return { url, localUrl: `${url}?options=${encodeURIComponent('-c synchronous_commit=local')}` };
}

/** A producer's transaction whose COMMIT is in the WAL and waits for the standby: its rows are not visible yet. */
export interface WaitingCommit {
  /** The waiting backend. */
  pid: number;
  /** Its transaction's id, 32 bits as pgoutput carries it. */
  xid: number;
  /** The rows it inserted into the outbox table (read inside the transaction: nobody else sees them yet). */
  rows: { seq: string; id: string }[];
  /** Resolves once the COMMIT returns to the producer. */
  committed: Promise<void>;
  /** Lets the COMMIT complete (cancels the backend's wait: the commit then completes locally), and waits for it. */
  release(): Promise<void>;
}

/**
 * Enqueues the messages in one transaction on `url` and sends COMMIT; resolves once the backend waits for the
 * standby (pg_stat_activity's wait event SyncRep), i.e. once the commit record is flushed and streamed.
 */
export async function commitThatWaits(
  url: string,
  outbox: Outbox,
  messages: OutboxMessage[],
  observer: pg.Pool,
  /** The outbox table, schema-qualified. */
  table: string,
): Promise<WaitingCommit> {
  const client = new pg.Client({ connectionString: url });
  // The cancelled wait comes back as a WARNING; nothing else is expected on this connection.
  client.on('error', () => undefined);
  await client.connect();
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const pid = rows[0]!.pid;
  await client.query('BEGIN');
  await outbox.enqueue(client, messages);
  const { rows: xid } = await client.query<{ xid: string }>('SELECT pg_current_xact_id()::text AS xid');
  const { rows: inserted } = await client.query<{ seq: string; id: string }>(
    `SELECT seq::text AS seq, id FROM ${table} WHERE xmin::text = (pg_current_xact_id()::text::int8 % 4294967296)::text ORDER BY seq`,
  );
  const committed = client.query('COMMIT').then(async () => {
    await client.end();
  });
  committed.catch(() => undefined);
  await waitUntil(async () => {
    const { rows: waiting } = await observer.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'`, [
      pid,
    ]);
    return waiting.length > 0;
  }, `backend ${pid} to wait for the standby`);
  return {
    pid,
    xid: Number(BigInt(xid[0]!.xid) % 4294967296n),
    rows: inserted,
    committed,
    async release() {
      await observer.query('SELECT pg_cancel_backend($1)', [pid]);
      await committed;
    },
  };
}

async function waitUntil(check: () => Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
