import { createHash } from 'node:crypto';
import type { TableNames } from './identifiers.js';

/** Channel names are identifiers: PostgreSQL refuses (pg_notify) or truncates (LISTEN) longer ones. */
const MAX_CHANNEL_BYTES = 63;
const HASH_CHARS = 16;

/**
 * The LISTEN/NOTIFY channel that wakes relays of this outbox table: `<schema>.<table>`, or, when that is over 63
 * bytes (two long names), its first characters and a hash of the whole, so it stays short, stable across
 * processes and versions, and different per table. (pg_notify with a longer name fails, and with it every enqueue.)
 */
export function notifyChannel(names: TableNames): string {
  const full = `${names.schema ?? 'public'}.${names.table}`;
  if (Buffer.byteLength(full) <= MAX_CHANNEL_BYTES) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, HASH_CHARS);
  // Names are plain ASCII identifiers, so characters are bytes.
  return `${full.slice(0, MAX_CHANNEL_BYTES - HASH_CHARS - 1)}_${hash}`;
}
