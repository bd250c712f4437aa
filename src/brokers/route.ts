import type { OutgoingMessage } from './broker.js';

/**
 * Where a broker sends one message, or why it can send it nowhere. A refusal is about the message's topic and the
 * configuration, which no retry changes: the adapter reports it as a permanent failure.
 */
export type Route<Destination> = { to: Destination } | { refused: string };

/**
 * How every adapter (and RoutingBroker) finds a message's destination: one method with one signature, so each reads
 * the same way and a caller can ask where a message would go without publishing it.
 */
export interface MessageRouter<Destination> {
  route(message: OutgoingMessage): Route<Destination>;
}

/**
 * `table[topic]`, only when the table names the topic itself: a topic such as 'constructor' must not find a member
 * of Object.prototype.
 */
export function ownEntry<V>(table: Readonly<Record<string, V>> | undefined, topic: string): V | undefined {
  return table !== undefined && Object.hasOwn(table, topic) ? table[topic] : undefined;
}
