/** What `processOnce` reports: the handler's result, or that the message was processed before (handler skipped). */
export type ProcessResult<T> = { duplicate: false; result: T } | { duplicate: true };

/** A received message as the consumer helpers (and dead-letter replay) hand it to your handler. */
export interface InboxMessage {
  /** The message id for life; the inbox records it with the consumer's name. */
  id: string;
  /** The producer's topic (`txoutbox-topic` header), else the AMQP routing key or the NATS subject. */
  topic: string;
  /** The ordering key (`txoutbox-key` header), if the producer set one. */
  key: string | null;
  /** The bytes as published (UTF-8 JSON for txoutbox's JSON payloads). */
  payload: Buffer;
  contentType: string | null;
  /** Every header as text, txoutbox's own included. */
  headers: Record<string, string>;
  /** 1 on the first delivery to the handler, 2 on the first redelivery after a failure, ... */
  attempt: number;
}

/**
 * A consumer-side dead letter: a message whose handler kept failing (or that could not go through the inbox at all),
 * kept with its last error until a person acts. The one shape for every broker, as stored and as listed.
 */
export interface InboxDeadLetter {
  /** The row's seq, as text (a bigint): pass it to `replayDeadLetter` or `deleteDeadLetter`. */
  seq: string;
  consumer: string;
  /** Null when the message carried no id (or an empty one). */
  messageId: string | null;
  /** The broker: 'rabbitmq', 'nats' or 'sqs' from the helpers; a consumer of your own names its own. */
  source: string;
  /** The queue (RabbitMQ; the queue URL for SQS), or `<stream>/<consumer>`. */
  destination: string;
  topic: string | null;
  payload: Buffer;
  contentType: string | null;
  headers: Record<string, string>;
  /** Why it is dead: the handler's last error (with its stack), or why it was never handed to the handler. */
  error: string;
  /** Attempts counted against `maxAttempts`; 0 when the message was not processable at all. */
  attempts: number;
  deadAt: Date;
}

/**
 * A dead letter before it is stored (no seq or time yet): what `recordDeadLetter` takes and the helpers' `dead`
 * event reports.
 */
export type NewDeadLetter = Omit<InboxDeadLetter, 'seq' | 'deadAt'>;
