import { ValidationError } from '../errors.js';
import type { IdGenerator } from './ids.js';
import type { ValidMessage } from './message.js';
import { encodePayload } from './payload.js';

export interface MessageLimits {
  maxPayloadBytes: number;
}

/** Limits that keep every field storable on both databases and carriable by every broker. */
export const MAX_TOPIC_LENGTH = 255;
export const MAX_KEY_LENGTH = 255;
export const MAX_ID_LENGTH = 255;
export const MAX_HEADERS_BYTES = 64 * 1024;

const TOPIC_PATTERN = /^[A-Za-z0-9._:/-]+$/;
/** HTTP token characters: a header name that every broker's header model (AMQP, NATS, Kafka, MQTT 5, HTTP) accepts. */
const HEADER_NAME_PATTERN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
const CONTENT_TYPE_PATTERN = /^[\x21-\x7e]+\/[\x20-\x7e]+$/;
/** Names the relay and the broker adapters set themselves from the message's own fields. */
const RESERVED_HEADER_PREFIX = 'txoutbox-';
const RESERVED_HEADER_NAMES = new Set(['content-type', 'message-id', 'nats-msg-id']);
/**
 * Text every broker's header model carries unchanged: no control characters (HTTP and NATS headers are lines;
 * MQTT brokers disconnect a client that sends them) and no lone surrogates (UTF-8 cannot encode them).
 */
const UNCARRIABLE_TEXT = /[\u0000-\u001f\u007f-\u009f]|[\uD800-\uDFFF]/u;
const KNOWN_FIELDS = new Set(['topic', 'payload', 'key', 'headers', 'id', 'contentType', 'availableAt', 'delayMs']);
/** DATETIME's upper bound on MySQL; later instants are certainly a bug. */
const LATEST_AVAILABLE_AT = Date.UTC(9999, 11, 31);

/** Checks one message and encodes it for storage, or throws a ValidationError naming the field. */
export function validateMessage(input: unknown, at: string, limits: MessageLimits, newId: IdGenerator): ValidMessage {
  const field = (name: string) => (at ? `${at}.${name}` : name);
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ValidationError(at || 'message', 'must be an object like { topic, payload }');
  }
  const message = input as Record<string, unknown>;
  for (const name of Object.keys(message)) {
    if (!KNOWN_FIELDS.has(name)) {
      throw new ValidationError(field(name), `is not a message field (known: ${[...KNOWN_FIELDS].join(', ')})`);
    }
  }

  const topic = message.topic;
  if (typeof topic !== 'string' || topic.length === 0) {
    throw new ValidationError(field('topic'), 'is required and must be a non-empty string');
  }
  if (topic.length > MAX_TOPIC_LENGTH) {
    throw new ValidationError(field('topic'), `is ${topic.length} characters, over the ${MAX_TOPIC_LENGTH} limit`);
  }
  if (!TOPIC_PATTERN.test(topic)) {
    throw new ValidationError(field('topic'), `"${topic}" may only contain letters, digits and . _ : / -`);
  }

  const key = optionalText(message.key, field('key'), MAX_KEY_LENGTH);
  const id = message.id === undefined ? generatedId(newId, field('id')) : optionalText(message.id, field('id'), MAX_ID_LENGTH);
  if (id === null) throw new ValidationError(field('id'), 'must be a string when given (omit it for a generated ULID)');

  const isBytes = message.payload instanceof Uint8Array;
  if (!('payload' in message)) throw new ValidationError(field('payload'), 'is required (use null for an empty payload)');
  const payload = encodePayload(message.payload, field('payload'), limits.maxPayloadBytes);

  let contentType = isBytes ? 'application/octet-stream' : 'application/json';
  if (message.contentType !== undefined) {
    if (
      typeof message.contentType !== 'string' ||
      message.contentType.length > 255 ||
      !CONTENT_TYPE_PATTERN.test(message.contentType)
    ) {
      throw new ValidationError(field('contentType'), 'must be a MIME type such as "application/json"');
    }
    contentType = message.contentType;
  }

  const headers = validateHeaders(message.headers, field('headers'));

  if (message.availableAt !== undefined && message.delayMs !== undefined) {
    throw new ValidationError(field('availableAt'), 'and delayMs cannot both be given; pick one');
  }
  let availableAt: Date | null = null;
  if (message.availableAt !== undefined) {
    const value = message.availableAt;
    if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
      throw new ValidationError(field('availableAt'), 'must be a valid Date');
    }
    if (value.getTime() < 0 || value.getTime() > LATEST_AVAILABLE_AT) {
      throw new ValidationError(field('availableAt'), 'must be between 1970 and 9999');
    }
    availableAt = value;
  }
  let delayMs = 0;
  if (message.delayMs !== undefined) {
    const value = message.delayMs;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > LATEST_AVAILABLE_AT) {
      throw new ValidationError(field('delayMs'), 'must be a non-negative number of milliseconds');
    }
    delayMs = Math.round(value);
  }

  return { id, topic, key, payload, contentType, headers, availableAt, delayMs };
}

/** An id from generateId, held to the rules of a given one: a bad generator must not reach the database. */
function generatedId(newId: IdGenerator, field: string): string {
  const id: unknown = newId();
  try {
    const valid = optionalText(id, field, MAX_ID_LENGTH);
    if (valid === null) throw new ValidationError(field, 'must be a string');
    return valid;
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    throw new ValidationError(field, `${error.reason} (this id came from the outbox's generateId option)`);
  }
}

function optionalText(value: unknown, field: string, maxLength: number): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new ValidationError(field, 'must be a string');
  if (value.length === 0) throw new ValidationError(field, 'must not be empty');
  if (value.length > maxLength) throw new ValidationError(field, `is ${value.length} characters, over the ${maxLength} limit`);
  if (UNCARRIABLE_TEXT.test(value)) {
    throw new ValidationError(
      field,
      'must not contain control characters (such as newlines or tabs) or lone surrogates: it travels as a broker header',
    );
  }
  return value;
}

function validateHeaders(value: unknown, field: string): string {
  if (value === undefined) return '{}';
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.getPrototypeOf(value) !== Object.prototype) {
    throw new ValidationError(field, 'must be a plain object of string values');
  }
  for (const [name, headerValue] of Object.entries(value)) {
    if (!HEADER_NAME_PATTERN.test(name) || name.length > 255) {
      throw new ValidationError(`${field}.${name}`, "is not a valid header name (letters, digits and !#$%&'*+.^_`|~- only)");
    }
    const lower = name.toLowerCase();
    if (lower.startsWith(RESERVED_HEADER_PREFIX) || RESERVED_HEADER_NAMES.has(lower)) {
      throw new ValidationError(`${field}.${name}`, 'is reserved: txoutbox sets it from the message itself (id, contentType)');
    }
    if (typeof headerValue !== 'string') {
      throw new ValidationError(
        `${field}.${name}`,
        `must be a string, got ${headerValue === null ? 'null' : typeof headerValue}`,
      );
    }
    if (UNCARRIABLE_TEXT.test(headerValue)) {
      throw new ValidationError(
        `${field}.${name}`,
        'must not contain control characters (such as newlines or tabs) or lone surrogates',
      );
    }
    // HTTP and NATS trim header values: a value that would arrive changed is refused instead.
    if (headerValue !== headerValue.trim()) {
      throw new ValidationError(`${field}.${name}`, 'must not start or end with white space (brokers trim it)');
    }
  }
  const json = JSON.stringify(value);
  if (Buffer.byteLength(json) > MAX_HEADERS_BYTES) {
    throw new ValidationError(field, `take ${Buffer.byteLength(json)} bytes, over the ${MAX_HEADERS_BYTES}-byte limit`);
  }
  return json;
}
