import type { Kysely } from 'kysely';
import { z } from 'zod';
import type { Broker } from '../brokers/broker.js';
import { DIALECT_NAMES, type DialectName } from '../dialects/dialect-name.js';
import { assertPlainIdentifier } from '../dialects/identifiers.js';
import { dialectFor } from '../dialects/index.js';
import { DEFAULT_TABLE_NAME } from '../dialects/migrator.js';
import type { ListenSource } from './pg-listener.js';
import type { RelayStore } from '../dialects/dialect.js';
import { parseOptions } from '../config.js';

export type DeadLetterPolicy = 'block-key' | 'skip';

/** 'polling' (default) claims rows from the table; 'logical' (PostgreSQL) streams them from a replication slot. */
export type RelayMode = 'polling' | 'logical';

export interface RelayOptions<DB = unknown> {
  /** A Kysely instance (with its own pool) on the database that holds the outbox. */
  db: Kysely<DB>;
  dialect: DialectName;
  table?: string;
  schema?: string;
  broker: Broker;
  /** Messages claimed per round-trip. Default 100. */
  batchSize?: number;
  /**
   * Payload bytes one claim may take (a larger message is still claimed, alone). With concurrency and the batch
   * claimed ahead, the relay holds at most about 2 × concurrency × maxBatchBytes of payloads. Default 8 MiB.
   */
  maxBatchBytes?: number;
  /** Batches in flight at once; memory stays bounded by batchSize × concurrency. Default 2. */
  concurrency?: number;
  /** How long a claim is exclusive; a relay that dies is taken over after it. Default 30 s. */
  leaseMs?: number;
  /** How long to wait for the broker's acknowledgement; past it the outcome is unknown and the message is retried. Default 10 s. */
  publishTimeoutMs?: number;
  /** Attempts before a message is dead-lettered. Default 10. */
  maxAttempts?: number;
  backoff?: { initialMs?: number; maxMs?: number; factor?: number };
  /** What a dead message does to its key: 'block-key' (default) keeps later messages waiting, keeping order; 'skip' lets them go on. */
  deadLetterPolicy?: DeadLetterPolicy;
  /** Longest sleep when idle: the safety net behind NOTIFY on PostgreSQL, the ceiling of adaptive polling on MySQL. */
  pollIntervalMs?: number;
  /** MySQL: the first (shortest) idle sleep of adaptive polling. Default 20 ms. */
  minPollIntervalMs?: number;
  /** PostgreSQL: a connection string or client factory for the LISTEN connection that wakes the relay on commit. */
  listen?: ListenSource;
  /** Keep sent rows this long before deleting them (0: delete at once). Default 0. */
  retainSentMs?: number;
  /** How often the cleanup runs, and how many rows one cleanup statement deletes. */
  cleanupIntervalMs?: number;
  cleanupBatchSize?: number;
  /**
   * PostgreSQL: commit the relay's own bookkeeping (claims, sent marks, retries) without waiting for the WAL
   * flush. Default true. A database crash can undo the last moments of marks, so those messages are sent again
   * with the same ids (at-least-once already allows that); producers' commits keep their own durability.
   */
  asyncCommit?: boolean;
  /** Names this relay instance in leases; default host, pid and a random suffix. */
  instanceId?: string;
  /** Randomness for backoff jitter; injectable for tests. */
  random?: () => number;
  /** @internal The store the relay works on; tests of the loop pass an in-memory one. Default: the dialect's. */
  store?: RelayStore;
  /**
   * While the broker is unreachable (an adapter marks such outcomes), claiming pauses and every this many ms one
   * message is tried as a probe; the first that gets through resumes full speed. Default 250 ms.
   */
  brokerProbeIntervalMs?: number;
  /** How the relay finds committed messages. Default 'polling'. 'logical' needs PostgreSQL with wal_level = logical. */
  mode?: RelayMode;
  /** Logical mode: the replication slot (created on first start when missing). Default `<schema>_<table>_slot`. */
  slot?: string;
  /** Logical mode: the publication `migrate(db, { publication })` created. Default `<schema>_<table>_publication`. */
  publication?: string;
  /**
   * Logical mode: split the stream into this many partitions by a hash of the key, one slot and publication each
   * (`<slot>_<i>`, `<publication>_<i>`; migrate with the same number), so several relays publish in parallel.
   */
  partitions?: number;
  /**
   * Logical mode: the connection the slot is streamed over (a connection string or pg client options). Default:
   * the host, port, database and user of `db`'s own connections, with the password from PGPASSWORD.
   */
  replication?: string | Record<string, unknown>;
  /** Logical mode: how often a standby relay tries to take a slot another relay holds. Default 500 ms. */
  standbyRetryMs?: number;
}

/**
 * The relay's tuning options, each with its bounds and default: the one definition of them. createRelay validates
 * with it (see relayOptionsSchema), and the sidecar's `relay:` settings (global and per table) are derived from it,
 * so both accept and refuse the same values. Only options a config file can hold belong here: the database, the
 * broker, the LISTEN and replication sources and functions are added by relayOptionsSchema.
 */
export const relayTuningSchema = z.object({
  batchSize: z.number().int().min(1).max(10_000).default(100),
  maxBatchBytes: z
    .number()
    .int()
    .min(1)
    .default(8 * 1024 * 1024),
  concurrency: z.number().int().min(1).max(64).default(2),
  leaseMs: z.number().int().min(100).default(30_000),
  publishTimeoutMs: z.number().int().min(10).default(10_000),
  maxAttempts: z.number().int().min(1).max(1000).default(10),
  backoff: z
    .object({
      initialMs: z.number().min(0).default(1000),
      maxMs: z
        .number()
        .min(0)
        .default(5 * 60_000),
      factor: z.number().min(1).default(2),
    })
    .strict()
    .default({ initialMs: 1000, maxMs: 5 * 60_000, factor: 2 }),
  deadLetterPolicy: z.enum(['block-key', 'skip']).default('block-key'),
  pollIntervalMs: z.number().int().min(1).optional(),
  minPollIntervalMs: z.number().int().min(1).default(20),
  retainSentMs: z.number().int().min(0).default(0),
  cleanupIntervalMs: z.number().int().min(10).default(10_000),
  cleanupBatchSize: z.number().int().min(1).max(100_000).default(1000),
  asyncCommit: z.boolean().default(true),
  instanceId: z.string().min(1).max(200).optional(),
  brokerProbeIntervalMs: z.number().int().min(10).max(60_000).default(250),
  mode: z.enum(['polling', 'logical']).default('polling'),
  slot: z.string().min(1).optional(),
  publication: z.string().min(1).optional(),
  partitions: z.number().int().min(1).max(64).default(1),
  standbyRetryMs: z.number().int().min(10).max(60_000).default(500),
});

/** The tuning options' defaults (pollIntervalMs has none here: resolveRelayOptions picks it by dialect and LISTEN). */
export const relayDefaults: Readonly<z.output<typeof relayTuningSchema>> = relayTuningSchema.parse({});

/** Every createRelay option: the tuning options and those only code can pass. */
export const relayOptionsSchema = z
  .object({
    db: z.custom<Kysely<unknown>>(
      (value) => typeof (value as { executeQuery?: unknown })?.executeQuery === 'function',
      'db must be a Kysely instance',
    ),
    dialect: z.enum(DIALECT_NAMES),
    table: z.string().default(DEFAULT_TABLE_NAME),
    schema: z.string().optional(),
    broker: z.custom<Broker>(
      (value) => typeof (value as { publish?: unknown })?.publish === 'function',
      'broker must have a publish(messages) method',
    ),
    ...relayTuningSchema.shape,
    listen: z.union([z.string(), z.function()]).optional(),
    random: z.function().optional(),
    store: z
      .custom<RelayStore>((value) => typeof (value as { claim?: unknown })?.claim === 'function', 'store must be a RelayStore')
      .optional(),
    replication: z.union([z.string().min(1), z.record(z.string(), z.unknown())]).optional(),
  })
  .strict()
  .refine((options) => options.mode === 'polling' || dialectFor(options.dialect).logicalDecoding, {
    message: "mode 'logical' reads PostgreSQL's write-ahead log: use it with dialect 'postgres' (MySQL relays poll)",
    path: ['mode'],
  })
  .refine((options) => options.leaseMs > options.publishTimeoutMs, {
    message: 'leaseMs must be longer than publishTimeoutMs, or a slow publish could be taken over and sent twice',
    path: ['leaseMs'],
  });

export type ResolvedRelayOptions = Omit<
  z.output<typeof relayOptionsSchema>,
  'schema' | 'pollIntervalMs' | 'random' | 'listen'
> & {
  schema: string | null;
  pollIntervalMs: number;
  random: () => number;
  listen: ListenSource | undefined;
};

export function resolveRelayOptions<DB>(options: RelayOptions<DB>): ResolvedRelayOptions {
  const resolved = parseOptions(relayOptionsSchema, options, 'createRelay');
  assertPlainIdentifier(resolved.table, 'table');
  if (resolved.schema !== undefined) assertPlainIdentifier(resolved.schema, 'schema');
  return {
    ...resolved,
    schema: resolved.schema ?? null,
    // With LISTEN the poll is only a safety net; without it (or on MySQL) it bounds idle latency.
    pollIntervalMs:
      resolved.pollIntervalMs ?? (dialectFor(resolved.dialect).commitWakeups && resolved.listen !== undefined ? 2000 : 1000),
    random: (resolved.random as (() => number) | undefined) ?? Math.random,
    listen: resolved.listen as ListenSource | undefined,
  };
}
