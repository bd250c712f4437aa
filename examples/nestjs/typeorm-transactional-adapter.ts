/**
 * A TypeORM adapter for @nestjs-cls/transactional: `txHost.tx` is the EntityManager of the transaction that
 * `@Transactional()` opened. It does what @nestjs-cls/transactional-adapter-typeorm does (that package is the one to
 * use in a project; it is not installed in this repository, so the example carries this copy).
 */
import type { TransactionalAdapter } from '@nestjs-cls/transactional';
import type { DataSource, EntityManager } from 'typeorm';
import type { IsolationLevel } from 'typeorm/driver/types/IsolationLevel.js';

export interface TypeormTransactionOptions {
  isolationLevel?: IsolationLevel;
}

export class TransactionalAdapterTypeorm implements TransactionalAdapter<DataSource, EntityManager, TypeormTransactionOptions> {
  readonly connectionToken: unknown;

  constructor(options: { dataSourceToken: unknown }) {
    this.connectionToken = options.dataSourceToken;
  }

  optionsFactory = (dataSource: DataSource) => ({
    wrapWithTransaction: (
      options: TypeormTransactionOptions | undefined,
      fn: () => Promise<unknown>,
      setTx: (tx?: EntityManager) => void,
    ) => run(dataSource.manager, options, fn, setTx),
    // A transaction() on a manager already in one is a savepoint (TypeORM).
    wrapWithNestedTransaction: (
      options: TypeormTransactionOptions | undefined,
      fn: () => Promise<unknown>,
      setTx: (tx?: EntityManager) => void,
      tx: EntityManager,
    ) => run(tx, options, fn, setTx),
    getFallbackInstance: () => dataSource.manager,
  });
}

function run(
  manager: EntityManager,
  options: TypeormTransactionOptions | undefined,
  fn: () => Promise<unknown>,
  setTx: (tx?: EntityManager) => void,
): Promise<unknown> {
  const work = (tx: EntityManager) => {
    setTx(tx);
    return fn();
  };
  return options?.isolationLevel === undefined ? manager.transaction(work) : manager.transaction(options.isolationLevel, work);
}
