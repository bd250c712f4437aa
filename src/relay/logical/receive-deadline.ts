import { TxOutboxError } from '../../errors.js';

/** TCP keepalive on the replication connection: the OS probes an idle link after this long. */
export const KEEPALIVE_DELAY_MS = 10_000;

/**
 * How long the relay waits without a message from the server before it takes the link for dead, given the
 * server's wal_sender_timeout (ms; 0: none) and how often the relay sends its status. Every status asks for an
 * answer, and a server that cannot answer (busy decoding) still sends a keepalive once it has not heard from the
 * relay for half its timeout: waiting longer than that, plus two statuses, is no false alarm. The server ends a
 * WAL sender (and frees the slot for a standby) a whole timeout after the last status it heard, and the relay's
 * last message may be up to a status interval younger than that status: letting go three intervals earlier (and at
 * most at three quarters; the relay checks four times an interval) means the relay lets go first, given
 * wal_sender_timeout ≥ 10 s. Null (wal_sender_timeout 0): no deadline, only TCP keepalive.
 */
export function receiveDeadlineMs(walSenderTimeoutMs: number, statusIntervalMs: number): number | null {
  if (!(walSenderTimeoutMs > 0)) return null;
  const noFalseAlarm = walSenderTimeoutMs / 2 + 2 * statusIntervalMs;
  const beforeTheServer = Math.min(walSenderTimeoutMs * 0.75, walSenderTimeoutMs - 3 * statusIntervalMs);
  return Math.max(noFalseAlarm, beforeTheServer);
}

/** The server said nothing for longer than it ever does on a live link: the stream (and the slot's tenure) is over. */
export class ReplicationLinkSilentError extends TxOutboxError {
  constructor(
    readonly silentMs: number,
    readonly walSenderTimeoutMs: number,
  ) {
    super(
      `No message from the server on the replication connection for ${silentMs} ms (wal_sender_timeout is ` +
        `${walSenderTimeoutMs} ms): the link is taken as dead and the slot let go, before the server frees it for a ` +
        'standby. This relay streams again once it can reach the server; if the link was alive, raise wal_sender_timeout.',
      'TXOUTBOX_REPLICATION_SILENT',
    );
  }
}
