import { EntitySchema, raw, type EntityManager } from '@mikro-orm/core';
import type { SqlEntityManager } from '@mikro-orm/knex';
import { MikroORM as MariaDbMikroORM } from '@mikro-orm/mariadb';
import { MikroORM as PostgreSqlMikroORM } from '@mikro-orm/postgresql';
import type { DialectName, OrmTransaction } from '../../../src/index.js';
import { fromMikroOrm } from '../../../src/orm/mikro-orm.js';
import type { OrmFixture } from '../orm-contract.js';

interface Order {
  id: string;
}
interface Effect {
  id: string;
  times: number;
}

/** The harness's business tables, declared with EntitySchema (no decorators, no reflect-metadata). */
export const OrderEntity = new EntitySchema<Order>({
  name: 'Order',
  tableName: 'orders',
  properties: { id: { type: 'string', primary: true } },
});
export const EffectEntity = new EntitySchema<Effect>({
  name: 'Effect',
  tableName: 'effects',
  properties: { id: { type: 'string', primary: true }, times: { type: 'integer' } },
});

/** Rolls the nested transaction back once the work is done. */
class RollBack extends Error {}

/**
 * MikroORM on the test database: on PostgreSQL the harness's schema is the entities' schema, on MySQL it is the
 * database connected to. The pool has room for the contract's 20 concurrent transactions.
 */
export async function openMikroOrm(dialect: DialectName, url: string, schema: string) {
  const common = { entities: [OrderEntity, EffectEntity], pool: { min: 0, max: 25 }, debug: false };
  return dialect === 'postgres'
    ? PostgreSqlMikroORM.init({ ...common, clientUrl: url, schema })
    : MariaDbMikroORM.init({ ...common, clientUrl: url, dbName: schema });
}

export async function openMikroOrmFixture(dialect: DialectName, url: string, schema: string): Promise<OrmFixture> {
  const orm = await openMikroOrm(dialect, url, schema);
  const emOf = (tx: OrmTransaction) => tx.handle as EntityManager;
  const times = dialect === 'postgres' ? '"effects"."times" + 1' : '`effects`.`times` + 1';
  return {
    // A fork per transaction, as MikroORM advises for concurrent transactions.
    transaction: (work) => orm.em.fork().transactional((em) => work(fromMikroOrm(em))),
    async rolledBackSavepoint(tx, work) {
      // em.transactional inside a transaction runs in a SAVEPOINT (propagation NESTED, the default).
      await emOf(tx)
        .transactional(async (inner) => {
          await work(fromMikroOrm(inner));
          throw new RollBack();
        })
        .catch((error: unknown) => {
          if (!(error instanceof RollBack)) throw error;
        });
    },
    async insertOrder(tx, id) {
      await emOf(tx).insert(OrderEntity, { id });
    },
    async applyEffect(tx, id) {
      const em = emOf(tx) as SqlEntityManager;
      await em
        .createQueryBuilder(EffectEntity)
        .insert({ id, times: 1 })
        .onConflict('id')
        .merge({ times: raw(times) })
        .execute();
    },
    close: () => orm.close(),
  };
}
