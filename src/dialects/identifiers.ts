import { ConfigError } from '../errors.js';

/**
 * Table and schema names end up inside SQL text (identifiers cannot be bound as parameters), so only plain
 * identifiers are accepted: that rules out injection through options and quoting surprises across databases.
 */
const PLAIN_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** PostgreSQL's limit is 63 bytes and MySQL's 64; derived names add up to 15 characters (`_key_locks`, `_migrations_lock`). */
const MAX_BASE_LENGTH = 48;

export function assertPlainIdentifier(value: unknown, option: string): string {
  if (typeof value !== 'string' || !PLAIN_IDENTIFIER.test(value) || value.length > MAX_BASE_LENGTH) {
    throw new ConfigError(
      `Option "${option}" must be a plain SQL identifier (a letter or _, then letters, digits or _; at most ` +
        `${MAX_BASE_LENGTH} characters), got ${JSON.stringify(value)}.`,
    );
  }
  return value;
}

/** The names of every object one outbox owns, derived from its table name. */
export interface TableNames {
  schema: string | null;
  /** The outbox table. */
  table: string;
  /** MySQL only: the fixed lock stripes relays take so that two relays never sequence one key at once. */
  keyLocks: string;
}

export function tableNames(table: string, schema: string | null): TableNames {
  return { schema, table, keyLocks: `${table}_key_locks` };
}
