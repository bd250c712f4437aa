import type { OutgoingMessage } from '../brokers/broker.js';

export interface RetryingMessage {
  message: OutgoingMessage;
  error: string;
  delayMs: number;
}

export interface DeadMessage {
  message: OutgoingMessage;
  error: string;
}

/** The relay's events. Listen to `error` to see database or listener trouble; the relay keeps going regardless. */
export interface RelayEvents {
  published: [messages: OutgoingMessage[]];
  retrying: [messages: RetryingMessage[]];
  dead: [messages: DeadMessage[]];
  error: [error: Error];
}
