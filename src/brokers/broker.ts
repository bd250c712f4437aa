/** A message as the relay hands it to a broker adapter. */
export interface OutgoingMessage {
  /** The message id for life; adapters pass it to the broker's own dedupe where there is one. */
  id: string;
  topic: string;
  key: string | null;
  /** The exact bytes to publish. */
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  /** 1 on the first try, 2 on the first retry, ... */
  attempt: number;
  createdAt: Date;
}

/** What became of one message of a publish call. */
export type PublishOutcome =
  /** The broker has durably accepted the message (its persisted acknowledgement). */
  | { status: 'ok' }
  /** Not accepted, or not known to be: try again later with the same id. Timeouts are this. */
  | {
      status: 'retryable';
      error: string;
      /**
       * The broker could not be reached at all (no connection, the connection went down, publishers blocked): the
       * broker's state, not this message's fault. The relay does not count the attempt, and pauses claiming while
       * it probes for the broker's return (see CircuitBreaker). Leave it unset when the message itself may be why.
       */
      unreachable?: boolean;
    }
  /** Can never succeed as it is (no such destination, rejected as malformed): dead-letter it now. */
  | { status: 'permanent'; error: string };

export interface PublishContext {
  /** Aborted when the relay gives up waiting (its publish deadline passed, or it is stopping). */
  signal: AbortSignal;
}

/**
 * The one thing the relay needs from a broker. An adapter may report `ok` only after the broker's persisted
 * acknowledgement: the relay deletes the row on `ok`, so an early `ok` is a lost message.
 * A batch holds at most one message per key, so an adapter may publish a batch's messages in parallel.
 */
export interface Broker {
  readonly name: string;
  /** One outcome per message, in the order given. Throwing counts as `retryable` for the whole batch. */
  publish(messages: readonly OutgoingMessage[], context: PublishContext): Promise<PublishOutcome[]>;
  close?(): Promise<void>;
}
