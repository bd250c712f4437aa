import knex, { type Knex } from 'knex';
import type { DialectName, OrmTransaction } from '../../../src/index.js';
import { fromKnex } from '../../../src/orm/knex.js';
import type { OrmFixture } from '../orm-contract.js';

/** Rolls the savepoint back once the work is done. */
class RollBack extends Error {}

/** A Knex instance on the test database with room for the contract's 20 concurrent transactions. */
export function openKnex(dialect: DialectName, url: string): Knex {
  return dialect === 'postgres'
    ? knex({ client: 'pg', connection: url, pool: { min: 0, max: 25 } })
    : knex({ client: 'mysql2', connection: { uri: url } as Knex.MySql2ConnectionConfig, pool: { min: 0, max: 25 } });
}

/** The contract's fixture for Knex: transactions by knex.transaction, savepoints by a nested trx.transaction. */
export async function openKnexFixture(dialect: DialectName, url: string, schema: string): Promise<OrmFixture> {
  const db = openKnex(dialect, url);
  const trxOf = (tx: OrmTransaction) => tx.handle as Knex.Transaction;
  return {
    transaction: (work) => db.transaction((trx) => work(fromKnex(trx))),
    async rolledBackSavepoint(tx, work) {
      // Knex runs a transaction started on a transaction in a SAVEPOINT, and rolls back to it when the work throws.
      await trxOf(tx)
        .transaction(async (inner) => {
          await work(fromKnex(inner));
          throw new RollBack();
        })
        .catch((error: unknown) => {
          if (!(error instanceof RollBack)) throw error;
        });
    },
    async insertOrder(tx, id) {
      await trxOf(tx).withSchema(schema).table('orders').insert({ id });
    },
    async applyEffect(tx, id) {
      const trx = trxOf(tx);
      await trx
        .withSchema(schema)
        .table('effects')
        .insert({ id, times: 1 })
        .onConflict('id')
        .merge({ times: trx.raw('?? + 1', [`effects.times`]) });
    },
    close: () => db.destroy(),
  };
}
