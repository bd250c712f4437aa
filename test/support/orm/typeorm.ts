import { DataSource, EntitySchema, type EntityManager } from 'typeorm';
import type { DialectName, OrmTransaction } from '../../../src/index.js';
import { fromTypeorm } from '../../../src/orm/typeorm.js';
import type { OrmFixture } from '../orm-contract.js';

interface Order {
  id: string;
}

/** `orders (id)` as a TypeORM entity, without decorators (the project compiles without experimentalDecorators). */
export function orderEntity(dialect: DialectName, schema: string): EntitySchema<Order> {
  return new EntitySchema<Order>({
    name: 'Order',
    tableName: 'orders',
    // A PostgreSQL schema, or a MySQL database: the harness gives each test file one of its own.
    ...(dialect === 'postgres' ? { schema } : { database: schema }),
    columns: { id: { type: String, primary: true, ...(dialect === 'mysql' ? { length: 64 } : {}) } },
  });
}

/** A TypeORM DataSource on the harness's schema (PostgreSQL) or database (MySQL), pooled for 25 connections. */
export async function openTypeormDataSource(dialect: DialectName, url: string, schema: string): Promise<DataSource> {
  const entities = [orderEntity(dialect, schema)];
  const dataSource =
    dialect === 'postgres'
      ? new DataSource({ type: 'postgres', url, schema, poolSize: 25, entities })
      : // The URL's database would override `database`, so the harness's database goes into the URL.
        new DataSource({ type: 'mysql', url: withDatabase(url, schema), poolSize: 25, timezone: 'Z', entities });
  return dataSource.initialize();
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

const managerOf = (tx: OrmTransaction) => tx.handle as EntityManager;

export async function openTypeormFixture(dialect: DialectName, url: string, schema: string): Promise<OrmFixture> {
  const dataSource = await openTypeormDataSource(dialect, url, schema);
  const effects = dialect === 'postgres' ? `"${schema}"."effects"` : `\`${schema}\`.\`effects\``;
  return {
    transaction: (work) => dataSource.transaction((manager) => work(fromTypeorm(manager))),
    // TypeORM turns a transaction() on a manager already in one into SAVEPOINT / ROLLBACK TO SAVEPOINT.
    async rolledBackSavepoint(tx, work) {
      const rollback = new Error('roll back the savepoint');
      const outcome = await managerOf(tx)
        .transaction(async (inner) => {
          await work(fromTypeorm(inner));
          throw rollback;
        })
        .catch((error: unknown) => error);
      if (outcome !== rollback) throw outcome;
    },
    async insertOrder(tx, id) {
      await managerOf(tx).insert('Order', { id });
    },
    async applyEffect(tx, id) {
      // An increment on conflict has no TypeORM builder (upsert() sets values), so it is raw SQL on the manager.
      await managerOf(tx).query(
        dialect === 'postgres'
          ? `INSERT INTO ${effects} AS e (id, times) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET times = e.times + 1`
          : `INSERT INTO ${effects} (id, times) VALUES (?, 1) ON DUPLICATE KEY UPDATE times = times + 1`,
        [id],
      );
    },
    close: () => dataSource.destroy(),
  };
}
