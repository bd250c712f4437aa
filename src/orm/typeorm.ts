/**
 * TypeORM: `outbox.enqueue(fromTypeorm(manager), message)` inside `dataSource.transaction(async (manager) => ...)`.
 * Nothing is imported from typeorm at run time, so any TypeORM from 0.3 on works (the types are structural).
 */
import type { OrmTransaction, SqlResult } from '../dialects/executor.js';
import { NotInTransactionError } from '../errors.js';

/** The part of TypeORM's `QueryRunner` txoutbox uses. */
export interface TypeormQueryRunnerLike {
  readonly isTransactionActive: boolean;
  readonly isReleased: boolean;
  query(
    query: string,
    parameters: unknown[] | undefined,
    useStructuredResult: true,
  ): Promise<{ records: unknown[]; affected?: number | undefined }>;
}

/** A TypeORM `EntityManager`: the one `dataSource.transaction(...)` hands its callback has a query runner in a transaction. */
export interface TypeormManagerLike {
  readonly queryRunner?: TypeormQueryRunnerLike | undefined;
}

/**
 * Wraps the `EntityManager` of an open TypeORM transaction for `enqueue` and `processOnce`. Statements run on the
 * transaction's query runner (so TypeORM's logging and subscribers see them); a failed one rejects with the
 * driver's own error (pg's, mysql2's), not TypeORM's QueryFailedError around it, because txoutbox reads the
 * driver's codes (MySQL's 1062 for a duplicate id). A manager without a query runner in an active transaction
 * (`dataSource.manager`, or one whose transaction has ended) is refused with NotInTransactionError.
 *
 * @example
 * ```ts
 * import { fromTypeorm } from 'txoutbox/typeorm';
 *
 * await dataSource.transaction(async (manager) => {
 *   await manager.insert(Order, order);
 *   await outbox.enqueue(fromTypeorm(manager), { topic: 'orders.placed', key: order.customer, payload: order });
 * });
 * ```
 */
export function fromTypeorm<M extends TypeormManagerLike>(manager: M): OrmTransaction<M> {
  const runner = activeRunner(manager);
  return {
    txoutboxOrmTransaction: true,
    orm: 'typeorm',
    handle: manager,
    async query(sql: string, parameters: readonly unknown[]): Promise<SqlResult> {
      // Checked again per statement: a wrapper kept past its transaction must not autocommit a message.
      if (!runner.isTransactionActive || runner.isReleased) throw notInTransaction();
      let result: Awaited<ReturnType<TypeormQueryRunnerLike['query']>>;
      try {
        result = await runner.query(sql, [...parameters], true);
      } catch (error) {
        throw driverError(error);
      }
      return { rows: result.records as Record<string, unknown>[], affectedRows: Number(result.affected ?? 0) };
    },
  };
}

function activeRunner(manager: TypeormManagerLike): TypeormQueryRunnerLike {
  const runner = (manager as TypeormManagerLike | null | undefined)?.queryRunner;
  if (runner === undefined || runner === null || !runner.isTransactionActive || runner.isReleased) throw notInTransaction();
  return runner;
}

function notInTransaction(): NotInTransactionError {
  return new NotInTransactionError(
    'a TypeORM EntityManager outside a transaction (use the manager that dataSource.transaction(...) passes to its callback)',
  );
}

/** TypeORM's QueryFailedError keeps the driver's error as `driverError`. */
function driverError(error: unknown): unknown {
  const wrapped = error as { name?: unknown; driverError?: unknown } | null;
  return wrapped?.name === 'QueryFailedError' && wrapped.driverError instanceof Error ? wrapped.driverError : error;
}
