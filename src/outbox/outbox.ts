import { ValidationError } from '../errors.js';
import type { DialectName } from '../dialects/dialect-name.js';
import { transactionExecutor, type TransactionLike } from '../dialects/executor.js';
import { tableNames, type TableNames } from '../dialects/identifiers.js';
import { dialectFor } from '../dialects/index.js';
import { planBatch } from './batch.js';
import { createUlidGenerator } from './ids.js';
import type { EnqueueResult, OutboxMessage, ValidMessage } from './message.js';
import { resolveOutboxOptions, type OutboxOptions } from './options.js';
import { validateMessage } from './validate.js';
import { activeTraceparent } from '../trace-context.js';

export interface Outbox {
  readonly dialect: DialectName;
  readonly names: TableNames;
  /**
   * Writes a message into the outbox inside `trx`, the caller's open transaction: it is sent if and only if
   * that transaction commits. Validates first; a bad message throws a ValidationError and writes nothing.
   *
   * @example
   * ```ts
   * const { id, duplicate } = await outbox.enqueue(trx, { topic: 'orders.placed', key: order.customer, payload: order });
   * ```
   */
  enqueue(trx: TransactionLike, message: OutboxMessage): Promise<EnqueueResult>;
  /** Writes a batch with one statement; results come back in the order given. */
  enqueue(trx: TransactionLike, messages: readonly OutboxMessage[]): Promise<EnqueueResult[]>;
}

/**
 * Creates the outbox: `enqueue` writes messages into the outbox table inside your own transaction, so each is
 * published if and only if that transaction commits. Invalid options throw a `ConfigError` at once.
 *
 * @example
 * ```ts
 * import { createOutbox } from 'txoutbox';
 *
 * const outbox = createOutbox({ dialect: 'postgres' });
 * await db.transaction().execute(async (trx) => {
 *   await trx.insertInto('orders').values(order).execute();
 *   await outbox.enqueue(trx, { topic: 'orders.placed', key: order.customer, payload: order });
 * }); // rolled back: no message; committed: the relay publishes it
 * ```
 */
export function createOutbox(options: OutboxOptions): Outbox {
  const resolved = resolveOutboxOptions(options);
  const dialect = dialectFor(resolved.dialect);
  const names = tableNames(resolved.table, resolved.schema);
  const newId = resolved.generateId ?? createUlidGenerator();
  const limits = { maxPayloadBytes: resolved.maxPayloadBytes };

  async function enqueueMany(trx: TransactionLike, input: readonly unknown[], single: boolean): Promise<EnqueueResult[]> {
    if (input.length === 0) throw new ValidationError('messages', 'is an empty batch; pass at least one message');
    if (input.length > resolved.maxBatch) {
      throw new ValidationError(
        'messages',
        `has ${input.length} messages, over maxBatch (${resolved.maxBatch}); split the batch`,
      );
    }
    const traceparent = activeTraceparent();
    const messages: ValidMessage[] = input.map((message, index) =>
      withTraceparent(validateMessage(message, single ? '' : `messages[${index}]`, limits, newId), traceparent),
    );
    assertGeneratedIdsUnique(input, messages, single);
    const run = await transactionExecutor(trx, resolved.dialect);
    const callerIds = input.some((message) => (message as { id?: unknown } | null)?.id !== undefined);
    const written = await dialect.enqueue(run, names, planBatch(messages, callerIds), { notify: resolved.notify });
    const reported = new Set<string>();
    return messages.map(({ id }) => {
      const duplicate = !written.has(id) || reported.has(id);
      reported.add(id);
      return { id, duplicate };
    });
  }

  function enqueue(trx: TransactionLike, message: OutboxMessage): Promise<EnqueueResult>;
  function enqueue(trx: TransactionLike, messages: readonly OutboxMessage[]): Promise<EnqueueResult[]>;
  async function enqueue(
    trx: TransactionLike,
    input: OutboxMessage | readonly OutboxMessage[],
  ): Promise<EnqueueResult | EnqueueResult[]> {
    if (Array.isArray(input)) return enqueueMany(trx, input, false);
    const [result] = await enqueueMany(trx, [input], true);
    return result as EnqueueResult;
  }

  return { dialect: resolved.dialect, names, enqueue };
}

/**
 * A given id may repeat (the second message is a duplicate, by design); a generated one must not: the second
 * message would be dropped as a duplicate of a message the caller never meant to repeat.
 */
function assertGeneratedIdsUnique(input: readonly unknown[], messages: readonly ValidMessage[], single: boolean): void {
  if (single) return;
  const generated = new Set<string>();
  messages.forEach(({ id }, index) => {
    if ((input[index] as { id?: unknown }).id !== undefined) return;
    if (generated.has(id)) {
      throw new ValidationError(
        `messages[${index}].id`,
        `"${id}" was made by generateId for an earlier message of this batch too; generateId must return a new id each call`,
      );
    }
    generated.add(id);
  });
}

/** Stores the caller's active trace in the message (unless it brings its own), so the relay can continue it. */
function withTraceparent(message: ValidMessage, traceparent: string | null): ValidMessage {
  if (traceparent === null) return message;
  const headers = JSON.parse(message.headers) as Record<string, string>;
  if (Object.keys(headers).some((name) => name.toLowerCase() === 'traceparent')) return message;
  return { ...message, headers: JSON.stringify({ ...headers, traceparent }) };
}
