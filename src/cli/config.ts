import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DIALECT_NAMES } from '../dialects/dialect-name.js';
import { tableNames } from '../dialects/identifiers.js';
import { dialectFor } from '../dialects/index.js';
import { defaultPublication, defaultSlot, logicalNames, type LogicalNames } from '../relay/logical/names.js';
import { relayDefaults, relayTuningSchema } from '../relay/options.js';
import { CliError, EXIT } from './errors.js';
import { isSecretField, Redactor } from './redact.js';

export const BROKER_TYPES = ['rabbitmq', 'nats', 'kafka', 'redis', 'mqtt', 'http', 'sqs', 'sns', 'memory'] as const;
export type BrokerType = (typeof BROKER_TYPES)[number];

const identifier = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a plain SQL identifier (a letter or _, then letters, digits or _)')
  .max(48, 'must be at most 48 characters');
/** An optional identifier; an empty value (e.g. `${SCHEMA:-}`) means "not set". */
const optionalIdentifier = z.preprocess((value) => (value === '' ? undefined : value), identifier.optional());
const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'must be letters, digits, ".", "_" or "-"');
/**
 * Number and boolean fields read text too: a value that is one whole `${VAR}` stays the variable's text (so a
 * password like 0012345678 is never turned into 12345678), and the field's own schema reads it.
 */
const numeric = <S extends z.ZodType>(schema: S) =>
  z.preprocess((value) => (typeof value === 'string' && /^\s*-?\d+(\.\d+)?\s*$/.test(value) ? Number(value) : value), schema);
const flag = <S extends z.ZodType>(schema: S) =>
  z.preprocess((value) => (value === 'true' ? true : value === 'false' ? false : value), schema);
const ms = numeric(z.number().int().min(0));

type Setting<T> = T extends object ? Partial<T> : T;
type Settings<Shape extends z.ZodRawShape> = { [K in keyof Shape]: z.ZodType<Setting<z.output<Shape[K]>>> };

/**
 * createRelay's tuning options as a config file reads them: each with the library's own schema (same bounds, same
 * messages) without its default, so a table's setting falls back to the global one and an unset one to
 * createRelay's default; numbers and booleans are read from text too, and an object (backoff) key by key.
 */
function settingsOf<Shape extends z.ZodRawShape>(shape: Shape): Settings<Shape> {
  const setting = (schema: z.ZodType): z.ZodType => {
    if (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) return setting(schema.unwrap() as z.ZodType);
    if (schema instanceof z.ZodObject) return z.object(settingsOf(schema.shape)).partial().strict();
    if (schema instanceof z.ZodNumber) return numeric(schema);
    if (schema instanceof z.ZodBoolean) return flag(schema);
    return schema;
  };
  return Object.fromEntries(Object.entries(shape).map(([key, schema]) => [key, setting(schema as z.ZodType)])) as Settings<Shape>;
}

/**
 * Relay options a config may set globally (`relay:`) and override per table: createRelay's tuning options, with
 * its meaning, bounds and defaults (but for retainSentMs: see DEFAULT_RETAIN_SENT_MS), and the sidecar's own.
 */
const relaySettings = z
  .object({
    ...settingsOf(relayTuningSchema.shape),
    /** How long SIGTERM waits for batches in flight before giving their leases back. */
    drainMs: ms,
    /** Logical mode: past this much WAL kept for a slot, the sidecar logs a warning (once per crossing). */
    maxRetainedWalBytes: numeric(z.number().int().min(1)),
  })
  .partial()
  .strict();
export type RelaySettings = z.output<typeof relaySettings>;

const tableSchema = z
  .object({
    table: identifier.default('txoutbox'),
    schema: optionalIdentifier,
    /** The topics this table carries: shown by `status` and in metrics even before their first message. */
    topics: z.array(z.string().min(1)).optional(),
    relay: relaySettings.optional(),
  })
  .strict();

/** A consumer inbox in this database: `migrate` creates its tables; the relay has nothing to do with it. */
const inboxSchema = z
  .object({
    table: identifier.default('txoutbox_inbox'),
    schema: optionalIdentifier,
  })
  .strict();

const databaseSchema = z
  .object({
    name,
    dialect: z.enum(DIALECT_NAMES, { message: `must be one of ${DIALECT_NAMES.join(', ')} (MariaDB is mysql)` }),
    url: z.string().regex(/^(postgres(ql)?|mysql|mariadb):\/\/./, 'must be a postgres://, postgresql:// or mysql:// URL'),
    /** Default schema (PostgreSQL) or database (MySQL) of this database's tables. */
    schema: optionalIdentifier,
    /** Connections in this database's pool (the relays' and the probes'). */
    poolSize: numeric(z.number().int().min(1).max(1000)).default(10),
    /** PostgreSQL: hold a LISTEN connection so enqueue's NOTIFY wakes the relay at once. Default false (producers send no NOTIFY unless `notify: true`). */
    listen: flag(z.boolean()).default(false),
    /**
     * Outbox tables. Default: one named txoutbox, unless the database declares an inbox (then only those listed:
     * a consumer-only service has no outbox). `[]` is allowed with an inbox.
     */
    tables: z.array(tableSchema).optional(),
    inbox: inboxSchema.optional(),
  })
  .strict()
  .superRefine((db, ctx) => {
    if (db.tables !== undefined && db.tables.length === 0 && db.inbox === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['tables'],
        message: 'lists no outbox table and the database declares no inbox: list a table, or add `inbox: {}`',
      });
    }
    const { urlSchemes } = dialectFor(db.dialect);
    if (!urlSchemes.some((scheme) => db.url.startsWith(`${scheme}:`))) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: `a ${db.dialect} database needs a ${urlSchemes[0]}:// URL` });
    }
  })
  .transform(({ tables, ...db }) => ({
    ...db,
    tables: tables ?? (db.inbox === undefined ? [{ table: 'txoutbox' }] : []),
  }));

/** Broker entries are the adapter's own options plus `type`; the adapter validates the rest when it is built. */
const brokerSchema = z.looseObject({
  type: z.enum(BROKER_TYPES, { message: `must be one of ${BROKER_TYPES.join(', ')}` }),
});

const configSchema = z
  .object({
    databases: z.array(databaseSchema).min(1, 'configure at least one database'),
    /** Required when a database has outbox tables (checked in crossCheck); an inbox-only config needs none. */
    brokers: z.record(name, brokerSchema).default({}),
    /** Topic pattern → broker name. `*` matches any run of characters; `'*'` alone is the default route. */
    routes: z.record(z.string().min(1), z.string()).default({}),
    relay: relaySettings.default({}),
    http: z
      .object({
        enabled: flag(z.boolean()).default(true),
        host: z.string().min(1).default('127.0.0.1'),
        port: numeric(z.number().int().min(0).max(65_535)).default(9464),
        /** The relay also serves the operator's dashboard on this server (`txoutbox dashboard` serves it alone). */
        dashboard: flag(z.boolean()).default(false),
        /** Enables the dashboard's write actions (retry, discard, delete); without it the dashboard is read-only. */
        dashboardToken: z.string().min(16, 'must be at least 16 characters (e.g. `openssl rand -hex 24`)').optional(),
      })
      .strict()
      .default({ enabled: true, host: '127.0.0.1', port: 9464, dashboard: false }),
    metrics: z
      .object({
        /** How often backlog, oldest-age and dead gauges are read from the tables. */
        backlogIntervalMs: numeric(z.number().int().min(100)).default(15_000),
        /** Topic labels per table; later topics are counted under `_other` (declared `topics` come first). */
        maxTopicsPerTable: numeric(z.number().int().min(1).max(100_000)).default(100),
      })
      .strict()
      .default({ backlogIntervalMs: 15_000, maxTopicsPerTable: 100 }),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
  })
  .strict();

/**
 * Checks across sections (routes name configured brokers, names are unique). It reads the raw input defensively,
 * so its problems are listed together with the schema's instead of only after those are fixed.
 */
function crossCheck(raw: unknown): string[] {
  const problems: string[] = [];
  const input = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const brokers = typeof input.brokers === 'object' && input.brokers !== null ? Object.keys(input.brokers) : [];
  const routes = typeof input.routes === 'object' && input.routes !== null ? (input.routes as Record<string, unknown>) : {};
  for (const [pattern, target] of Object.entries(routes)) {
    if (typeof target === 'string' && brokers.length > 0 && !brokers.includes(target)) {
      problems.push(`routes.${pattern}: names broker "${target}", which is not configured (brokers: ${brokers.join(', ')})`);
    }
  }
  if (brokers.length > 1 && !('*' in routes)) {
    problems.push(`routes: with several brokers, add a default route "*": <broker> (one of ${brokers.join(', ')})`);
  }
  const databases = Array.isArray(input.databases) ? (input.databases as unknown[]) : [];
  const names = new Set<unknown>();
  const withOutbox: string[] = [];
  databases.forEach((db, index) => {
    const entry = (typeof db === 'object' && db !== null ? db : {}) as Record<string, unknown>;
    if (entry.name !== undefined && names.has(entry.name))
      problems.push(`databases.${index}.name: "${String(entry.name)}" is used twice`);
    names.add(entry.name);
    const tables = new Set<string>();
    const listed = Array.isArray(entry.tables) ? (entry.tables as unknown[]) : null;
    const hasInbox = typeof entry.inbox === 'object' && entry.inbox !== null;
    (listed ?? []).forEach((table, t) => {
      const tableEntry = (typeof table === 'object' && table !== null ? table : {}) as Record<string, unknown>;
      const where = `${String(tableEntry.schema ?? entry.schema ?? '')}.${String(tableEntry.table ?? 'txoutbox')}`;
      if (tables.has(where)) problems.push(`databases.${index}.tables.${t}: table ${where} is listed twice`);
      tables.add(where);
    });
    if (listed === null && !hasInbox) tables.add(`${String(entry.schema ?? '')}.txoutbox`);
    if (hasInbox) {
      const inbox = entry.inbox as Record<string, unknown>;
      // Same name, same schema: both would share `<table>_migrations` and the inbox would overwrite the outbox.
      const where = `${String(inbox.schema ?? entry.schema ?? '')}.${String(inbox.table ?? 'txoutbox_inbox')}`;
      if (tables.has(where)) {
        problems.push(
          `databases.${index}.inbox.table: ${where} is also an outbox table of this database; give the inbox its own name`,
        );
      }
    }
    if (tables.size > 0) withOutbox.push(String(entry.name ?? index));
  });
  if (withOutbox.length > 0 && brokers.length === 0) {
    problems.push(
      `brokers: configure at least one broker: the outbox tables of ${withOutbox.join(', ')} need one to relay to ` +
        '(a database with only an inbox needs none)',
    );
  }
  return problems;
}

export type Config = z.output<typeof configSchema>;
export type DatabaseConfig = Config['databases'][number];
export type TableConfig = DatabaseConfig['tables'][number];
export type InboxConfig = NonNullable<DatabaseConfig['inbox']>;
export type BrokerConfig = Config['brokers'][string];

export interface LoadedConfig {
  config: Config;
  redactor: Redactor;
  path: string;
}

/**
 * Replaces `${NAME}` and `${NAME:-default}` in every string value (after parsing, so a value can never change
 * the file's structure); `$${` is a literal `${`. A variable that is unset and has no default is an error.
 */
export function substituteEnv(value: unknown, env: NodeJS.ProcessEnv, path: string[] = [], missing: string[] = []): unknown {
  if (typeof value === 'string') {
    // A value that is one whole ${VAR} stays text: the field's schema reads it (`port: ${PORT}` is a number there).
    // Broker options go to the adapters, whose schemas take numbers and booleans as such: there a whole ${VAR}
    // becomes one when that loses nothing (`1883`, `true`; not `0012`), and never in a secret-looking field.
    const whole = /^\$\{[^}]+\}$/.test(value);
    const text = value.replace(
      /\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g,
      (all, escaped, variable: string, fallback?: string) => {
        if (escaped !== undefined) return all.slice(1);
        const found = env[variable];
        if (found !== undefined && found !== '') return found;
        if (fallback !== undefined) return fallback;
        missing.push(
          `${path.join('.') || '(root)'}: environment variable ${variable} is not set (or use \${${variable}:-default})`,
        );
        return '';
      },
    );
    if (!whole || path[0] !== 'brokers' || path.length < 3 || isSecretField(path[path.length - 1]!)) return text;
    if (/^-?\d+(\.\d+)?$/.test(text) && String(Number(text)) === text) return Number(text);
    if (text === 'true' || text === 'false') return text === 'true';
    return text;
  }
  if (Array.isArray(value)) return value.map((item, index) => substituteEnv(item, env, [...path, String(index)], missing));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, substituteEnv(item, env, [...path, key], missing)]),
    );
  }
  return value;
}

function parseText(text: string, path: string): unknown {
  try {
    return extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new CliError(
      `${path} is not valid ${extname(path).toLowerCase() === '.json' ? 'JSON' : 'YAML'}: ${(error as Error).message}`,
      EXIT.config,
    );
  }
}

/**
 * Each table's lease (its own or the global one) must outlast its publish deadline, or a slow publish could be
 * taken over and sent twice. createRelay refuses that too, but only once the databases are open and with exit 1.
 */
function leaseProblems(config: z.output<typeof configSchema>): string[] {
  const problems = new Set<string>();
  config.databases.forEach((db, d) =>
    db.tables.forEach((table, t) => {
      const leaseMs = table.relay?.leaseMs ?? config.relay.leaseMs ?? relayDefaults.leaseMs;
      const publishTimeoutMs = table.relay?.publishTimeoutMs ?? config.relay.publishTimeoutMs ?? relayDefaults.publishTimeoutMs;
      if (leaseMs > publishTimeoutMs) return;
      const own = table.relay?.leaseMs !== undefined || table.relay?.publishTimeoutMs !== undefined;
      const at = own ? `databases.${d}.tables.${t}.relay` : 'relay';
      problems.add(
        `${at}.leaseMs: ${leaseMs} ms must be longer than publishTimeoutMs (${publishTimeoutMs} ms), or a slow publish ` +
          'could be taken over by another relay and sent twice',
      );
    }),
  );
  return [...problems];
}

/** Where a relay setting of a table comes from, for messages: the table's own, or the global one. */
function settingPath(table: TableConfig, d: number, t: number, setting: keyof RelaySettings): string {
  return table.relay?.[setting] !== undefined ? `databases.${d}.tables.${t}.relay.${setting}` : `relay.${setting}`;
}

/**
 * Tables in mode 'logical': only on PostgreSQL, with valid slot and publication names that no other table of the
 * database uses. createRelay checks some of this too, but only once databases are open, with exit 1.
 */
function logicalProblems(config: z.output<typeof configSchema>): string[] {
  const problems = new Set<string>();
  config.databases.forEach((db, d) => {
    const slots = new Map<string, string>();
    const publications = new Map<string, string>();
    db.tables.forEach((table, t) => {
      const settings = relaySettingsFor(config, table);
      if (settings.mode !== 'logical') return;
      if (!dialectFor(db.dialect).logicalDecoding) {
        problems.add(
          `${settingPath(table, d, t, 'mode')}: mode logical reads PostgreSQL's write-ahead log, but database ` +
            `"${db.name}" is ${db.dialect} (MySQL/MariaDB tables are relayed by polling: remove mode there)`,
        );
        return;
      }
      let names: LogicalNames;
      try {
        names = logicalNamesOf(db, table, settings);
      } catch (error) {
        problems.add(`databases.${d}.tables.${t}.relay: ${(error as Error).message}`);
        return;
      }
      const label = `${db.name}/${table.table}`;
      for (const [used, own, setting] of [
        [slots, names.slots, 'slot'],
        [publications, names.publications, 'publication'],
      ] as const) {
        for (const name of own) {
          const other = used.get(name);
          if (other !== undefined) {
            problems.add(
              `${settingPath(table, d, t, setting)}: ${setting} "${name}" is also used by ${other}; give each table its own`,
            );
          }
          used.set(name, label);
        }
      }
    });
  });
  return [...problems];
}

/** Validates an already parsed configuration object; every problem is listed with its path. */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv, source = 'the configuration'): LoadedConfig {
  const missing: string[] = [];
  const substituted = substituteEnv(raw, env, [], missing);
  const redactor = Redactor.fromConfig(substituted);
  const parsed = configSchema.safeParse(substituted);
  const problems = [...missing];
  problems.push(...crossCheck(substituted));
  if (!parsed.success) {
    for (const issue of parsed.error.issues) problems.push(`${issue.path.map(String).join('.') || '(root)'}: ${issue.message}`);
  }
  if (parsed.success) problems.push(...leaseProblems(parsed.data), ...logicalProblems(parsed.data));
  if (problems.length > 0 || !parsed.success) {
    throw new CliError(
      redactor.text(`Invalid configuration in ${source}:\n${problems.map((p) => `  - ${p}`).join('\n')}`),
      EXIT.config,
    );
  }
  return { config: parsed.data, redactor, path: source };
}

/** Reads a YAML (or .json) configuration file, substitutes `${ENV}` and validates it. */
export async function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as { code?: string }).code;
    throw new CliError(
      code === 'ENOENT'
        ? `Configuration file ${path} not found. Pass one with --config <file> (see docs/sidecar.md, the configuration reference).`
        : `Cannot read configuration file ${path}: ${(error as Error).message}`,
      EXIT.config,
    );
  }
  return parseConfig(parseText(text, path), env, path);
}

/** Relay settings for one table: the global ones, overridden by the table's. */
export function relaySettingsFor(config: Config, table: TableConfig): RelaySettings {
  return {
    ...config.relay,
    ...table.relay,
    ...(config.relay.backoff !== undefined || table.relay?.backoff !== undefined
      ? { backoff: { ...config.relay.backoff, ...table.relay?.backoff } }
      : {}),
  };
}

/** Sent rows are kept a minute by default so `status` can say what was sent in the last minute. */
export const DEFAULT_RETAIN_SENT_MS = 60_000;

/** Retained WAL per slot past which the sidecar warns (relay.maxRetainedWalBytes): 1 GiB. */
export const DEFAULT_MAX_RETAINED_WAL_BYTES = 1024 ** 3;

/** The slots and publications a table in mode logical uses: its settings, or the relay's defaults for the table. */
export function logicalNamesOf(database: DatabaseConfig, table: TableConfig, settings: RelaySettings): LogicalNames {
  const names = tableNames(table.table, table.schema ?? database.schema ?? null);
  return logicalNames(
    settings.slot ?? defaultSlot(names),
    settings.publication ?? defaultPublication(names),
    settings.partitions ?? relayDefaults.partitions,
  );
}
