import { z } from 'zod';
import { DIALECT_NAMES, type DialectName } from '../dialects/dialect-name.js';
import { assertPlainIdentifier } from '../dialects/identifiers.js';
import { dialectFor } from '../dialects/index.js';
import { DEFAULT_TABLE_NAME } from '../dialects/migrator.js';
import type { IdGenerator } from './ids.js';
import { parseOptions } from '../config.js';

export interface OutboxOptions {
  /** The database behind the transactions you will pass to `enqueue`. Use `mysql` for MariaDB. */
  dialect: DialectName;
  /** Outbox table name. Default `txoutbox`. */
  table?: string;
  /** PostgreSQL schema, or MySQL database, holding the table. Default: the connection's own. */
  schema?: string;
  /** Largest encoded payload accepted, in bytes. Default 1 MiB. */
  maxPayloadBytes?: number;
  /** Most messages accepted by one `enqueue` call. Default 1000. */
  maxBatch?: number;
  /** Makes ids for messages that bring none. Default: monotonic ULIDs. */
  generateId?: IdGenerator;
  /**
   * PostgreSQL: wake listening relays with NOTIFY when the transaction commits. Default false: PostgreSQL lets
   * only one notifying transaction commit at a time, which caps how fast your service commits. Relays find new
   * messages by adaptive polling instead (or call `relay.kick()` after a commit when the relay runs in-process).
   */
  notify?: boolean;
  /**
   * Which relay reads this outbox. 'logical' (PostgreSQL): relays stream committed rows from a replication slot, so
   * enqueue is a plain insert with no wake-up at all (`notify` must stay off). Default 'polling', which is a plain
   * insert too since 0.2; the option states the deployment and refuses what would not work in it.
   */
  mode?: 'polling' | 'logical';
}

/** Hard ceiling for maxBatch: keeps one enqueue statement well inside both databases' limits. */
const MAX_BATCH_CEILING = 10_000;

const schema = z.object({
  dialect: z.enum(DIALECT_NAMES, { message: `dialect must be one of ${DIALECT_NAMES.join(', ')}` }),
  table: z.string().default(DEFAULT_TABLE_NAME),
  schema: z.string().optional(),
  maxPayloadBytes: z
    .number()
    .int()
    .positive()
    .max(1024 * 1024 * 1024)
    .default(1024 * 1024),
  maxBatch: z.number().int().positive().max(MAX_BATCH_CEILING).default(1000),
  notify: z.boolean().default(false),
  mode: z.enum(['polling', 'logical']).default('polling'),
  generateId: z.custom<IdGenerator>((value) => typeof value === 'function', 'generateId must be a function').optional(),
});

export type ResolvedOutboxOptions = Omit<z.output<typeof schema>, 'schema'> & { schema: string | null };

export function resolveOutboxOptions(options: OutboxOptions): ResolvedOutboxOptions {
  const resolved = parseOptions(
    schema
      .strict()
      .refine((o) => o.mode === 'polling' || dialectFor(o.dialect).logicalDecoding, {
        message: "mode 'logical' reads PostgreSQL's write-ahead log: use it with dialect 'postgres'",
        path: ['mode'],
      })
      .refine((o) => o.mode === 'polling' || !o.notify, {
        message: "mode 'logical' needs no wake-up: relays stream each commit from the slot; leave notify off",
        path: ['notify'],
      }),
    options,
    'createOutbox',
  );
  assertPlainIdentifier(resolved.table, 'table');
  if (resolved.schema !== undefined) assertPlainIdentifier(resolved.schema, 'schema');
  return { ...resolved, schema: resolved.schema ?? null };
}
