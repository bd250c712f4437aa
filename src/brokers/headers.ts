import type { OutgoingMessage } from './broker.js';

/** The prefix of the headers txoutbox sets itself; enqueue refuses user headers that start with it. */
export const OWN_HEADER_PREFIX = 'txoutbox-';

/** The headers (or user properties, or stream fields) every adapter sets from the message's own fields. */
export const OWN_HEADERS = {
  id: 'txoutbox-id',
  key: 'txoutbox-key',
  topic: 'txoutbox-topic',
  attempt: 'txoutbox-attempt',
} as const;

/** The message's own fields as txoutbox-* headers: id, key (only when the message has one), topic, attempt. */
export function txoutboxHeaders(message: OutgoingMessage): Record<string, string> {
  return {
    [OWN_HEADERS.id]: message.id,
    ...(message.key === null ? {} : { [OWN_HEADERS.key]: message.key }),
    [OWN_HEADERS.topic]: message.topic,
    [OWN_HEADERS.attempt]: String(message.attempt),
  };
}
