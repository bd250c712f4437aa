import { DataTypes, Sequelize, type ModelStatic, type Model, type Transaction } from 'sequelize';
import type { DialectName, OrmTransaction } from '../../../src/index.js';
import { fromSequelize } from '../../../src/orm/sequelize.js';
import type { OrmFixture } from '../orm-contract.js';

/** Sequelize's driver for MySQL/MariaDB: mysql2 (its `mysql` dialect) or the mariadb connector (its `mariadb` dialect). */
export type SequelizeMysqlDriver = 'mysql' | 'mariadb';

/**
 * A Sequelize instance on the harness's schema (PostgreSQL: the models name it) or database (MySQL: in the URL),
 * pooled for 25 connections.
 */
export function openSequelize(
  dialect: DialectName,
  url: string,
  schema: string,
  driver: SequelizeMysqlDriver = 'mysql',
): Sequelize {
  const options = { logging: false, pool: { max: 25, min: 0 } } as const;
  if (dialect === 'postgres') return new Sequelize(url, { ...options, dialect: 'postgres' });
  const target = new URL(url);
  target.protocol = `${driver}:`;
  target.pathname = `/${schema}`;
  return new Sequelize(target.toString(), { ...options, dialect: driver });
}

export function defineOrder(sequelize: Sequelize, dialect: DialectName, schema: string): ModelStatic<Model<{ id: string }>> {
  return sequelize.define<Model<{ id: string }>>(
    'Order',
    { id: { type: DataTypes.STRING(64), primaryKey: true } },
    { tableName: 'orders', timestamps: false, ...(dialect === 'postgres' ? { schema } : {}) },
  );
}

const transactionOf = (tx: OrmTransaction) => tx.handle as Transaction;

export async function openSequelizeFixture(
  dialect: DialectName,
  url: string,
  schema: string,
  driver: SequelizeMysqlDriver = 'mysql',
): Promise<OrmFixture> {
  const sequelize = openSequelize(dialect, url, schema, driver);
  const Order = defineOrder(sequelize, dialect, schema);
  const effects = dialect === 'postgres' ? `"${schema}"."effects"` : `\`${schema}\`.\`effects\``;
  return {
    transaction: (work) => sequelize.transaction((t) => work(fromSequelize(t))),
    // Sequelize turns a transaction given `{ transaction: t }` into SAVEPOINT / ROLLBACK TO SAVEPOINT on t's connection.
    async rolledBackSavepoint(tx, work) {
      const rollback = new Error('roll back the savepoint');
      const outcome = await sequelize
        .transaction({ transaction: transactionOf(tx) }, async (inner) => {
          await work(fromSequelize(inner));
          throw rollback;
        })
        .catch((error: unknown) => error);
      if (outcome !== rollback) throw outcome;
    },
    async insertOrder(tx, id) {
      await Order.create({ id }, { transaction: transactionOf(tx) });
    },
    async applyEffect(tx, id) {
      // Model.upsert sets values and cannot add one, so the increment is a raw query in the transaction.
      await sequelize.query(
        dialect === 'postgres'
          ? `INSERT INTO ${effects} AS e (id, times) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET times = e.times + 1`
          : `INSERT INTO ${effects} (id, times) VALUES ($1, 1) ON DUPLICATE KEY UPDATE times = times + 1`,
        { bind: [id], transaction: transactionOf(tx) },
      );
    },
    close: () => sequelize.close(),
  };
}
