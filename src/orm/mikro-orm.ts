import { CompiledQuery } from 'kysely';
import type { Knex } from 'knex';
import { callerKyselyExecutor, isKyselyLike, type KyselyTransactionLike, type OrmTransaction } from '../dialects/executor.js';
import { NotInTransactionError } from '../errors.js';
import { knexTransaction } from './knex.js';

/** What txoutbox needs of a MikroORM `EntityManager` (v6 or v7): its transaction context. */
export interface MikroOrmEntityManagerLike {
  getTransactionContext(): unknown;
}

/**
 * Wraps the EntityManager of `em.transactional(async (em) => ...)` for txoutbox:
 * `await outbox.enqueue(fromMikroOrm(em), message)`. txoutbox's statements run on the transaction's connection,
 * beside the entities the EntityManager flushes at commit. The transaction context is a Knex transaction in
 * MikroORM v6 and a Kysely transaction in v7; both are accepted. An EntityManager outside a transaction is refused.
 *
 * @example
 * ```ts
 * import { fromMikroOrm } from 'txoutbox/mikro-orm';
 *
 * await orm.em.fork().transactional(async (em) => {
 *   em.persist(order); // flushed at commit, in the same transaction
 *   await outbox.enqueue(fromMikroOrm(em), { topic: 'orders.placed', key: order.customer, payload: { id: order.id } });
 * });
 * ```
 */
export function fromMikroOrm<EM extends MikroOrmEntityManagerLike>(em: EM): OrmTransaction<EM> {
  const context = typeof em?.getTransactionContext === 'function' ? em.getTransactionContext() : undefined;
  if (context === undefined || context === null) {
    throw new NotInTransactionError('a MikroORM EntityManager outside a transaction (use em.transactional(async (em) => ...))');
  }
  if (isKnexTransaction(context)) return knexTransaction('mikro-orm', context, em);
  if (isKyselyLike(context) && context.isTransaction) {
    // v7 holds a ControlledTransaction, which says when it has ended.
    const state = context as { isCommitted?: unknown; isRolledBack?: unknown };
    if (state.isCommitted === true || state.isRolledBack === true) {
      throw new NotInTransactionError('a MikroORM EntityManager whose transaction has already committed or rolled back');
    }
    return kyselyTransaction(context, em);
  }
  throw new NotInTransactionError(
    'a MikroORM EntityManager whose transaction context is neither a Knex nor a Kysely transaction',
  );
}

function isKnexTransaction(value: unknown): value is Knex.Transaction {
  const candidate = value as Partial<Knex.Transaction> | null;
  return typeof candidate?.raw === 'function' && candidate.isTransaction === true;
}

/** MikroORM v7: the context is a Kysely transaction, which runs txoutbox's compiled SQL as it is. */
function kyselyTransaction<EM>(trx: KyselyTransactionLike, em: EM): OrmTransaction<EM> {
  // One that has ended is refused with NotInTransactionError (Kysely's own refusal is a bare Error).
  const run = callerKyselyExecutor(trx);
  return {
    txoutboxOrmTransaction: true,
    orm: 'mikro-orm',
    handle: em,
    query: (sql, parameters) => run(CompiledQuery.raw(sql, [...parameters])),
  };
}
