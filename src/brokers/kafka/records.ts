import type { Message } from 'kafkajs';
import type { OutgoingMessage } from '../broker.js';
import { OWN_HEADERS, txoutboxHeaders } from '../headers.js';

/** The headers the adapter sets from the message itself; user headers of the same names are dropped. */
export const KAFKA_OWN_HEADERS = [...Object.values(OWN_HEADERS), 'content-type'] as const;

/** The Kafka record for a message: key, the exact payload bytes, and txoutbox's fields as headers. */
export function toKafkaMessage(message: OutgoingMessage): Message & { headers: Record<string, string> } {
  const headers: Record<string, string> = {};
  const own = new Set<string>(KAFKA_OWN_HEADERS);
  for (const [name, value] of Object.entries(message.headers)) {
    if (!own.has(name.toLowerCase())) headers[name] = value;
  }
  // The Kafka key is the key; its header only matches the other adapters (set when there is a key).
  Object.assign(headers, txoutboxHeaders(message));
  headers['content-type'] = message.contentType;
  return { key: message.key, value: message.payload, headers };
}
