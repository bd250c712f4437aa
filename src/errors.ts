/** Every error txoutbox throws on purpose is a TxOutboxError, so callers can tell ours from the driver's. */
export class TxOutboxError extends Error {
  constructor(
    message: string,
    /** A stable, machine-readable code; messages may be reworded, codes are not. */
    readonly code: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * A message given to `enqueue` (or a delivery given to `processOnce`) is malformed. Nothing was written and the
 * caller's transaction is still usable.
 */
export class ValidationError extends TxOutboxError {
  constructor(
    /** Where the problem is, e.g. `topic`, `messages[2].headers.x-trace`, `payload.items[3]`, `messageId`. */
    readonly field: string,
    readonly reason: string,
    /** What was invalid, for the message. */
    subject = 'outbox message',
  ) {
    super(`Invalid ${subject}: ${field} ${reason}`, 'TXOUTBOX_INVALID_MESSAGE');
  }
}

/** Options given to a txoutbox factory are wrong (bad table name, unknown dialect, ...). */
export class ConfigError extends TxOutboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'TXOUTBOX_INVALID_CONFIG', options);
  }
}

/** `enqueue` was given something that is not an open transaction, so the message would not be atomic. */
export class NotInTransactionError extends TxOutboxError {
  constructor(
    /** What was given instead of an open transaction. */
    readonly what: string,
    /** The call that needed the transaction: `enqueue`, or `processOnce` (whose inbox row must commit with your effects). */
    operation: 'enqueue' | 'processOnce' = 'enqueue',
  ) {
    super(
      `${operation} needs an open transaction, but got ${what}. ` +
        'Call it inside db.transaction().execute(trx => ...) (Kysely), after BEGIN on a pg client, ' +
        'after beginTransaction() on a mysql2 connection, or with an ORM transaction wrapped by its txoutbox module ' +
        '(fromPrisma(tx), fromDrizzle(tx), fromTypeorm(manager), fromKnex(trx), fromSequelize(t), fromMikroOrm(em)), so ' +
        (operation === 'enqueue'
          ? 'the message commits or rolls back with your data.'
          : 'the inbox record commits or rolls back with your effects.'),
      'TXOUTBOX_NOT_IN_TRANSACTION',
    );
  }
}

/** The outbox tables are missing or incomplete; the fix is to run the migrations. */
export class SchemaError extends TxOutboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(`${message} Run the txoutbox migrations (migrate(db, { dialect })) first.`, 'TXOUTBOX_SCHEMA', options);
  }
}
