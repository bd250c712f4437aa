import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PrismaMariaDb } from '@prisma/adapter-mariadb';
import { PrismaPg } from '@prisma/adapter-pg';
import type { DialectName, OrmTransaction } from '../../../src/index.js';
import { fromPrisma, type PrismaTransactionClient } from '../../../src/orm/prisma.js';
import type { OrmFixture } from '../orm-contract.js';
import { ensurePrismaClient } from './prisma/generate.js';

const HERE = dirname(fileURLToPath(import.meta.url));

/** What the fixture uses of the clients generated from prisma/postgres.prisma and prisma/mysql.prisma. */
interface HarnessTx extends PrismaTransactionClient {
  order: { create(args: { data: { id: string } }): PromiseLike<unknown> };
  effect: {
    upsert(args: {
      where: { id: string };
      create: { id: string; times: number };
      update: { times: { increment: number } };
    }): PromiseLike<unknown>;
  };
  $transaction<T>(work: (inner: HarnessTx) => Promise<T>): Promise<T>;
}

interface HarnessClient {
  $transaction<T>(work: (tx: HarnessTx) => Promise<T>): Promise<T>;
  $disconnect(): Promise<void>;
}

type ClientModule = { PrismaClient: new (options: object) => HarnessClient };

/** Loads (generating it first, if need be) the harness schema's client for a dialect. */
export async function loadHarnessClient(dialect: DialectName): Promise<ClientModule> {
  const client = await ensurePrismaClient(
    resolve(HERE, 'prisma', `${dialect}.prisma`),
    resolve(HERE, 'prisma', 'generated', dialect),
  );
  // A computed specifier: the generated client does not exist before the first run, and tsc must not need it.
  return (await import(pathToFileURL(client).href)) as ClientModule;
}

/** The driver adapter for a URL: node-postgres on PostgreSQL, the mariadb driver on MySQL/MariaDB. */
export function prismaAdapter(dialect: DialectName, url: string, schema: string, connections = 25): object {
  if (dialect === 'postgres') {
    // `schema` qualifies the models' tables (txoutbox qualifies its own statements).
    return new PrismaPg({ connectionString: url, max: connections }, { schema, onPoolError: () => undefined });
  }
  const parsed = new URL(url);
  return new PrismaMariaDb({
    host: parsed.hostname,
    port: Number(parsed.port || 3306),
    user: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    database: schema,
    connectionLimit: connections,
  });
}

const ROLLBACK = Symbol('roll the savepoint back');

export async function openPrismaFixture(dialect: DialectName, url: string, schema: string): Promise<OrmFixture> {
  const { PrismaClient } = await loadHarnessClient(dialect);
  // Transactions of the 20-delivery test wait on each other's row lock for seconds: past Prisma's default 5 s.
  const prisma = new PrismaClient({
    adapter: prismaAdapter(dialect, url, schema),
    transactionOptions: { timeout: 60_000, maxWait: 30_000 },
  });
  const handle = (tx: OrmTransaction) => tx.handle as HarnessTx;
  return {
    transaction: (work) => prisma.$transaction((tx) => work(fromPrisma(tx))),
    async rolledBackSavepoint(tx, work) {
      // Prisma 7.5+ nests $transaction on a transaction client as a savepoint; throwing rolls back to it.
      await handle(tx)
        .$transaction(async (inner) => {
          await work(fromPrisma(inner));
          throw ROLLBACK;
        })
        .catch((error: unknown) => {
          if (error !== ROLLBACK) throw error;
        });
    },
    async insertOrder(tx, id) {
      await handle(tx).order.create({ data: { id } });
    },
    async applyEffect(tx, id) {
      await handle(tx).effect.upsert({ where: { id }, create: { id, times: 1 }, update: { times: { increment: 1 } } });
    },
    close: () => prisma.$disconnect(),
  };
}
