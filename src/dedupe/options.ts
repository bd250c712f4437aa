import { z } from 'zod';
import { parseOptions } from '../config.js';
import { DIALECT_NAMES, type DialectName } from '../dialects/dialect-name.js';
import { assertPlainIdentifier } from '../dialects/identifiers.js';
import { DEFAULT_INBOX_TABLE_NAME } from '../dialects/migrator.js';

/**
 * How long processed ids are remembered by default: 7 days. It must outlast every way the same id can arrive again:
 * the relay's retry horizon (10 attempts with backoff up to 5 minutes is well under an hour), messages waiting in a
 * broker queue while consumers are down, and producers re-enqueueing with the same idempotency key.
 */
export const DEFAULT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

export interface InboxOptions {
  /** The database behind the transactions you will pass to `processOnce`. Use `mysql` for MariaDB. */
  dialect: DialectName;
  /** Inbox table name; dead letters go to `<table>_dead`. Default `txoutbox_inbox`. */
  table?: string;
  /** PostgreSQL schema, or MySQL database, holding the tables. Default: the connection's own. */
  schema?: string;
  /** How long `cleanup` keeps processed ids. Default 7 days; keep it longer than any redelivery can come. */
  retentionMs?: number;
}

/** Where the inbox tables are: what `migrateInbox` needs, and the start of the inbox's options. */
export const inboxLocationSchema = z.object({
  dialect: z.enum(DIALECT_NAMES, { message: `dialect must be one of ${DIALECT_NAMES.join(', ')}` }),
  table: z.string().default(DEFAULT_INBOX_TABLE_NAME),
  schema: z.string().optional(),
});

const schema = inboxLocationSchema.extend({ retentionMs: z.number().int().min(1).default(DEFAULT_RETENTION_MS) }).strict();

export type ResolvedInboxOptions = Omit<z.output<typeof schema>, 'schema'> & { schema: string | null };

export function resolveInboxOptions(options: InboxOptions): ResolvedInboxOptions {
  const resolved = parseOptions(schema, options, 'createInbox');
  assertPlainIdentifier(resolved.table, 'table');
  if (resolved.schema !== undefined) assertPlainIdentifier(resolved.schema, 'schema');
  return { ...resolved, schema: resolved.schema ?? null };
}
