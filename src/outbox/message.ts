/** A JSON value, as a payload may be. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue | undefined };

/** What application code hands to `enqueue`. */
export interface OutboxMessage {
  /** Where the message goes, e.g. `orders.created`; routed to a broker destination by the relay. */
  topic: string;
  /** Any JSON value (stored and published as UTF-8 JSON), or raw bytes (published as they are). */
  payload: JsonValue | Uint8Array;
  /** Ordering key: messages with the same key are published in enqueue order. No key, no order promise. */
  key?: string | null;
  /** String headers carried to the broker's native headers. */
  headers?: Record<string, string>;
  /** Idempotency key. A second message with the same id is not written and is reported as a duplicate. Default: a monotonic ULID. */
  id?: string;
  /** MIME type of the payload. Default: `application/json`, or `application/octet-stream` for bytes. */
  contentType?: string;
  /** Deliver no earlier than this instant. */
  availableAt?: Date;
  /** Deliver no earlier than this many milliseconds after the enqueue statement. */
  delayMs?: number;
}

/** What `enqueue` reports for each message, in the order given. */
export interface EnqueueResult {
  id: string;
  /** True when a message with this id already existed (or came earlier in the same batch); nothing new was written for it. */
  duplicate: boolean;
}

/** A message after validation: everything the database needs, already encoded. */
export interface ValidMessage {
  id: string;
  topic: string;
  key: string | null;
  payload: Buffer;
  contentType: string;
  /** Headers as a JSON object text. */
  headers: string;
  availableAt: Date | null;
  delayMs: number;
}
