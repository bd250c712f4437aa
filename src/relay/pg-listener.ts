import type { TableNames } from '../dialects/identifiers.js';
import { notifyChannel } from '../dialects/notify-channel.js';

/** The part of a node-postgres Client the listener uses. */
export interface ListenClient {
  connect(): Promise<unknown>;
  query(text: string): Promise<unknown>;
  on(event: 'notification', listener: (message: { channel: string }) => void): unknown;
  on(event: 'error' | 'end', listener: (error?: Error) => void): unknown;
  end(): Promise<void>;
}

/** A connection string, or a function that makes a new, unconnected pg Client. */
export type ListenSource = string | (() => ListenClient | Promise<ListenClient>);

const RECONNECT_MS = [100, 500, 1000, 2000, 5000];
const END_WAIT_MS = 2000;

/**
 * Ends a client without ever hanging: node-postgres' end() can wait for an 'end' event that a connection which
 * failed half-way already emitted.
 */
async function endQuietly(client: ListenClient): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    client.end().catch(() => undefined),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, END_WAIT_MS);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}

/**
 * Holds one dedicated connection in LISTEN on the outbox's channel and calls `onWake` for each notification,
 * reconnecting with backoff when the connection drops. While it is down the relay's slow poll still finds work,
 * so a lost connection costs latency, never messages.
 */
export function listenForWakeups(
  source: ListenSource,
  names: TableNames,
  onWake: () => void,
  onError: (error: Error) => void,
): { close(): Promise<void> } {
  const channel = notifyChannel(names);
  let closed = false;
  let client: ListenClient | null = null;
  /** The connection being opened (connect + LISTEN), so a failure or close() can end it too. */
  let opening: ListenClient | null = null;
  let failures = 0;

  const makeClient = async (): Promise<ListenClient> => {
    if (typeof source !== 'string') return source();
    const { default: pg } = await import('pg');
    return new pg.Client({ connectionString: source }) as unknown as ListenClient;
  };

  const connect = async (): Promise<void> => {
    while (!closed) {
      let next: ListenClient | null = null;
      try {
        next = await makeClient();
        opening = next;
        const current = next;
        next.on('error', (error) => error && onError(error));
        next.on('end', () => {
          if (client === current && !closed) {
            client = null;
            void connect();
          }
        });
        next.on('notification', (message) => message.channel === channel && onWake());
        await next.connect();
        await next.query(`LISTEN "${channel.replaceAll('"', '""')}"`);
        opening = null;
        if (closed) return void (await next.end().catch(() => undefined));
        client = next;
        failures = 0;
        onWake(); // Anything committed while we were not listening is found by the claim this triggers.
        return;
      } catch (error) {
        // The connection may be open although LISTEN failed: close it, or one leaks per attempt.
        if (next !== null) {
          if (opening === next) opening = null;
          await endQuietly(next);
        }
        if (closed) return;
        onError(error as Error);
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS[Math.min(failures++, RECONNECT_MS.length - 1)]));
      }
    }
  };
  void connect();

  return {
    async close() {
      closed = true;
      const current = client;
      const pending = opening;
      client = null;
      opening = null;
      await Promise.all([current === null ? undefined : endQuietly(current), pending === null ? undefined : endQuietly(pending)]);
    },
  };
}
