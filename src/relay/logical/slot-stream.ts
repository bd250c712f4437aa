import pg from 'pg';
import { PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { formatLsn, parseLsn, type Lsn } from './lsn.js';
import { KEEPALIVE_DELAY_MS, ReplicationLinkSilentError, receiveDeadlineMs } from './receive-deadline.js';

/** A committed outbox row as the slot streamed it. */
export interface StreamedRow {
  seq: string;
  id: string;
  topic: string;
  key: string | null;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  attempts: number;
  notBefore: Date;
  createdAt: Date;
}

/** One committed transaction's outbox rows, in the order it inserted them. */
export interface StreamedTransaction {
  /** Where the transaction's commit record ends: confirming this position confirms the transaction. */
  endLsn: Lsn;
  commitTime: Date;
  /** The transaction's id (32 bits, from pgoutput's BEGIN): its rows are visible to others only once it is (see visibility.ts). */
  xid: number;
  rows: StreamedRow[];
}

export interface SlotStreamHandlers {
  transaction(transaction: StreamedTransaction): void;
  /** The server has sent everything up to here: with nothing of ours in flight, this may be confirmed. */
  caughtUp(lsn: Lsn): void;
  /** The server has started streaming: the slot is this connection's until it closes. */
  started(): void;
}

/** Where a relay's connection to the server is taken from: a connection string or pg client options. */
export type ReplicationSource = string | pg.ClientConfig;

interface CopyConnection {
  stream: { pause(): void; resume(): void; destroy(error?: Error): void };
  on(event: 'copyData', listener: (message: { chunk: Buffer }) => void): void;
  once(event: 'replicationStart', listener: () => void): void;
  sendCopyFromChunk(chunk: Buffer): void;
}

/** Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

/**
 * One replication connection streaming a slot through pgoutput: it hands over each committed transaction's
 * outbox inserts, in commit order, and tells the server only the position the relay confirms (never what was
 * merely received), so the server keeps everything after it for the next start.
 */
export class SlotStream {
  private client: pg.Client | null = null;
  private stopped = false;
  private connection: CopyConnection | null = null;
  private confirmed: Lsn = 0n;
  private current: StreamedTransaction | null = null;
  private timer: NodeJS.Timeout | null = null;
  private silenceTimer: NodeJS.Timeout | null = null;
  private paused = false;
  /** When the last message came from the server (or reading resumed): the receive deadline counts from it. */
  private heardAt = 0;

  constructor(
    private readonly source: ReplicationSource,
    private readonly slot: string,
    private readonly publication: string,
    private readonly table: { schema: string | null; name: string },
    private readonly handlers: SlotStreamHandlers,
    private readonly statusIntervalMs = 1000,
  ) {}

  /**
   * Streams until the connection ends. Rejects at once when the slot is in use by another relay (the error says
   * "is active for PID"), missing, or the server refuses.
   */
  async run(from: Lsn): Promise<void> {
    // Stopped before it started (the relay stopped while it checked whether the slot was free): never connect.
    if (this.stopped) return;
    const config = typeof this.source === 'string' ? { connectionString: this.source } : this.source;
    // TCP keepalive unless the source says otherwise: the OS then notices a peer that vanished from an idle link.
    const client = new pg.Client({
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS,
      ...config,
      replication: 'database',
    } as pg.ClientConfig);
    this.client = client;
    this.confirmed = from;
    client.on('error', () => {
      // The stream's promise below rejects with the same error; without a listener it would crash the process.
    });
    try {
      await client.connect();
    } catch (error) {
      this.close();
      await client.end().catch(() => undefined);
      throw error;
    }
    // Stopped while connecting: stop() ended this client already, or will find none to end.
    if (this.stopped) {
      this.close();
      await client.end().catch(() => undefined);
      return;
    }
    const connection = client.connection as unknown as CopyConnection;
    this.connection = connection;
    const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [this.publication] });
    connection.on('copyData', ({ chunk }) => {
      this.heardAt = Date.now();
      this.receive(chunk, plugin);
    });
    connection.once('replicationStart', () => this.handlers.started());
    try {
      // A silent link (a cut cable, a dropped route) closes nothing: only a deadline on what the server sends ends
      // the stream, and so the tenure, before the server lets a standby take the slot (see receiveDeadlineMs).
      const walSenderTimeoutMs = await walSenderTimeout(client);
      const deadlineMs = receiveDeadlineMs(walSenderTimeoutMs, this.statusIntervalMs);
      this.heardAt = Date.now();
      // Asks for an answer, so a live server is heard from every interval.
      this.timer = setInterval(() => this.sendStatus(true), this.statusIntervalMs);
      this.timer.unref();
      if (deadlineMs !== null) {
        // Checked four times an interval, so the relay lets go at most a quarter interval past the deadline.
        this.silenceTimer = setInterval(() => {
          const silentMs = Date.now() - this.heardAt;
          // While paused the relay reads nothing, so the server's messages wait unread: no sign of a dead link.
          if (!this.paused && silentMs > deadlineMs) connection.stream.destroy(new ReplicationLinkSilentError(silentMs, walSenderTimeoutMs));
        }, this.statusIntervalMs / 4);
        this.silenceTimer.unref();
      }
      await plugin.start(client, this.slot, formatLsn(from));
    } finally {
      this.close();
      // A refused START_REPLICATION (the slot is another relay's) leaves the connection open: each would hold one
      // of the server's few WAL senders for good.
      await client.end().catch(() => undefined);
    }
  }

  /** Everything before this position is relayed: the server may free its WAL, and a restart begins here. */
  confirm(lsn: Lsn): void {
    if (lsn <= this.confirmed) return;
    this.confirmed = lsn;
    this.sendStatus(false);
  }

  /** Stops reading from the server (backpressure) until resume(). */
  pause(): void {
    if (this.paused || this.connection === null) return;
    this.paused = true;
    this.connection.stream.pause();
  }

  resume(): void {
    if (!this.paused || this.connection === null) return;
    this.paused = false;
    this.heardAt = Date.now();
    this.connection.stream.resume();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const client = this.client;
    this.close();
    await client?.end().catch(() => undefined);
  }

  private close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.silenceTimer !== null) clearInterval(this.silenceTimer);
    this.silenceTimer = null;
    this.connection = null;
    this.client = null;
  }

  private receive(chunk: Buffer, plugin: PgoutputPlugin): void {
    if (chunk[0] === 0x6b) {
      // Keepalive: the position the server has decoded up to, and whether it wants an answer now. In the middle of
      // a transaction (a large one may be interrupted by keepalives) that position can lie past its commit, which
      // has not reached the relay yet: it is no sign of being caught up then.
      if (this.current === null) this.handlers.caughtUp(chunk.readBigUInt64BE(1));
      if (chunk[17] === 1) this.sendStatus(false);
      return;
    }
    if (chunk[0] !== 0x77) return;
    const message = plugin.parse(chunk.subarray(25)) as Pgoutput.Message;
    switch (message.tag) {
      case 'begin':
        this.current = { endLsn: 0n, commitTime: new Date(Number(message.commitTime) / 1000), xid: message.xid, rows: [] };
        return;
      case 'insert':
        if (this.current !== null && message.relation.name === this.table.name && (this.table.schema === null || message.relation.schema === this.table.schema)) {
          this.current.rows.push(toRow(message.new));
        }
        return;
      case 'commit': {
        const transaction = this.current;
        this.current = null;
        if (transaction === null || message.commitEndLsn === null) return;
        transaction.endLsn = parseLsn(message.commitEndLsn);
        this.handlers.transaction(transaction);
        return;
      }
      default:
    }
  }

  /** A standby status update: written, flushed and applied all say the confirmed position. */
  private sendStatus(replyRequested: boolean): void {
    if (this.connection === null) return;
    const status = Buffer.alloc(34);
    status[0] = 0x72;
    status.writeBigUInt64BE(this.confirmed, 1);
    status.writeBigUInt64BE(this.confirmed, 9);
    status.writeBigUInt64BE(this.confirmed, 17);
    status.writeBigInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_US, 25);
    status[33] = replyRequested ? 1 : 0;
    this.connection.sendCopyFromChunk(status);
  }
}

/** The server's wal_sender_timeout for this connection, in ms (0: disabled). */
async function walSenderTimeout(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ ms: string }>(`SELECT setting AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'`);
  return Number(rows[0]?.ms ?? 0);
}

function toRow(row: Record<string, unknown>): StreamedRow {
  const headers = row.headers;
  return {
    seq: String(row.seq),
    id: String(row.id),
    topic: String(row.topic),
    key: row.msg_key === null || row.msg_key === undefined ? null : String(row.msg_key),
    payload: Buffer.isBuffer(row.payload) ? row.payload : Buffer.from(String(row.payload)),
    contentType: String(row.content_type),
    headers: (typeof headers === 'string' ? JSON.parse(headers) : (headers ?? {})) as Record<string, string>,
    attempts: Number(row.attempts ?? 0),
    notBefore: row.next_attempt_at instanceof Date ? row.next_attempt_at : new Date(String(row.next_attempt_at)),
    createdAt: row.created_at instanceof Date ? row.created_at : new Date(String(row.created_at)),
  };
}
