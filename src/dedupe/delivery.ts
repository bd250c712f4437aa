import { ValidationError } from '../errors.js';

/** Which consumer processes which message: the pair the inbox records once. */
export interface InboxDelivery {
  /** Names the consumer (service or handler), so two consumers of one message each process it once. */
  consumer: string;
  /** The message's id for life: txoutbox's id, carried as AMQP messageId / `txoutbox-id` / `Nats-Msg-Id`. */
  messageId: string;
}

/** Both columns hold at most 255 characters (PostgreSQL checks it; MySQL's VARBINARY(1020) fits 255 in UTF-8). */
export const MAX_INBOX_FIELD_LENGTH = 255;
/** Lone surrogates cannot be encoded as UTF-8, so they would not compare equal after a round-trip. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** Checks a delivery before anything is written, throwing a ValidationError that names the field. */
export function validateDelivery(input: unknown): InboxDelivery {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ValidationError('delivery', 'must be an object like { consumer, messageId }', 'inbox delivery');
  }
  const { consumer, messageId } = input as Record<string, unknown>;
  return { consumer: field('consumer', consumer), messageId: field('messageId', messageId) };
}

function field(name: string, value: unknown): string {
  const invalid = (reason: string) => new ValidationError(name, reason, 'inbox delivery');
  if (typeof value !== 'string') throw invalid(`must be a string, got ${value === null ? 'null' : typeof value}`);
  if (value.length === 0) throw invalid('must not be empty');
  if (value.length > MAX_INBOX_FIELD_LENGTH) {
    throw invalid(`is ${value.length} characters, over the ${MAX_INBOX_FIELD_LENGTH} limit`);
  }
  if (value.includes('\u0000')) throw invalid('must not contain NUL characters (PostgreSQL text cannot store them)');
  if (LONE_SURROGATE.test(value)) throw invalid('must not contain lone surrogates (they cannot be stored as UTF-8)');
  return value;
}
