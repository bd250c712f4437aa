import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox, NotInTransactionError, type DialectName } from '../../../src/index.js';
import { fromPrisma, PrismaDatabaseError, type PrismaTransactionClient } from '../../../src/orm/prisma.js';
import {
  dialectOf,
  migrateExample,
  openExampleClient,
  placeOrder,
  type OrderClient,
} from '../../../examples/prisma/place-order.js';
import { createHarness, type Harness } from '../../support/harness.js';
import { ormContract } from '../../support/orm-contract.js';
import { loadHarnessClient, openPrismaFixture, prismaAdapter } from '../../support/orm/prisma.js';
import { ensurePrismaClient } from '../../support/orm/prisma/generate.js';

ormContract('prisma', 'postgres', (h) => openPrismaFixture('postgres', inject('pgUrl'), h.schema));
ormContract('prisma', 'mysql', (h) => openPrismaFixture('mysql', inject('mysqlUrl'), h.schema));

const urlOf = (dialect: DialectName) => (dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl'));

interface RootClient extends PrismaTransactionClient {
  $transaction<T>(work: (tx: PrismaTransactionClient) => Promise<T>): Promise<T>;
  $disconnect(): Promise<void>;
}

for (const dialect of ['postgres', 'mysql'] as const) {
  describe(`fromPrisma on ${dialect}`, () => {
    let h: Harness;
    let prisma: RootClient;
    const orders = () => (dialect === 'postgres' ? `"${h.schema}"."orders"` : `\`${h.schema}\`.\`orders\``);
    const p = (n: number) => (dialect === 'postgres' ? `$${n}` : '?');
    beforeAll(async () => {
      h = await createHarness(dialect);
      const { PrismaClient } = await loadHarnessClient(dialect);
      prisma = new PrismaClient({ adapter: prismaAdapter(dialect, urlOf(dialect), h.schema, 2) }) as unknown as RootClient;
    });
    afterAll(async () => {
      await prisma?.$disconnect();
      await h?.destroy();
    });

    it('refuses the root client, and anything that is not a Prisma client, with NotInTransactionError', async () => {
      expect(() => fromPrisma(prisma)).toThrow(NotInTransactionError);
      expect(() => fromPrisma(prisma)).toThrow(/root PrismaClient/);
      expect(() => fromPrisma({} as never)).toThrow(NotInTransactionError);
      expect(() => fromPrisma(null as never)).toThrow(NotInTransactionError);
      await expect(h.outbox.enqueue(prisma as never, { topic: 't', payload: 1 })).rejects.toThrow(NotInTransactionError);
      expect(await h.rows()).toEqual([]);
    });

    it('refuses a transaction client whose transaction has ended', async () => {
      const leaked = await prisma.$transaction(async (tx) => fromPrisma(tx));
      const error = await h.outbox.enqueue(leaked, { topic: 't', payload: 1 }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(NotInTransactionError);
      expect(await h.rows()).toEqual([]);
    });

    it('reports affected rows, returns bigints and bytes as the drivers do, and keeps the database code on failure', async () => {
      await prisma
        .$transaction(async (tx) => {
          const wrapped = fromPrisma(tx);
          const insert = await wrapped.query(`INSERT INTO ${orders()} (id) VALUES (${p(1)}), (${p(2)}), (${p(3)})`, [
            'a',
            'b',
            'c',
          ]);
          expect(insert).toEqual({ rows: [], affectedRows: 3 });
          const removed = await wrapped.query(`DELETE FROM ${orders()} WHERE id <> ${p(1)}`, ['a']);
          expect(removed.affectedRows).toBe(2);
          const cast = (type: string) => (dialect === 'postgres' ? `::${type}` : '');
          const { rows } = await wrapped.query(
            `SELECT ${p(1)}${cast('int8')} AS big, ${p(2)}${cast('bytea')} AS bytes, count(*) AS n FROM ${orders()}`,
            [2n ** 62n, Buffer.from([0, 1, 255])],
          );
          expect(rows[0]!.big).toBe(2n ** 62n);
          expect(Buffer.isBuffer(rows[0]!.bytes) && (rows[0]!.bytes as Buffer).equals(Buffer.from([0, 1, 255]))).toBe(true);
          expect(Number(rows[0]!.n)).toBe(1);
          if (dialect === 'postgres') {
            const arrays = await wrapped.query('SELECT $1::text[] AS texts, $2::bytea[] AS bytes, $3::int8[] AS bigs', [
              ['x', null],
              [Buffer.from('y')],
              [1n, 2n],
            ]);
            expect(arrays.rows[0]).toEqual({ texts: ['x', null], bytes: [new Uint8Array(Buffer.from('y'))], bigs: [1n, 2n] });
            const returning = await wrapped.query(`UPDATE ${orders()} SET id = id RETURNING id`, []);
            expect(returning).toEqual({ rows: [{ id: 'a' }], affectedRows: 1 });
          }
          const error = await wrapped
            .query(`INSERT INTO ${orders()} (id) VALUES (${p(1)})`, ['a'])
            .catch((caught: unknown) => caught);
          expect(error).toBeInstanceOf(PrismaDatabaseError);
          expect(error).toMatchObject(dialect === 'postgres' ? { code: '23505' } : { errno: 1062 });
          expect((error as Error).cause).toMatchObject({ name: 'PrismaClientKnownRequestError', code: 'P2010' });
          throw new Error('roll back');
        })
        .catch((error: unknown) => expect(error).toMatchObject({ message: 'roll back' }));
      expect(await h.orderIds()).toEqual([]);
    });
  });

  describe(`examples/prisma on ${dialect}`, () => {
    const schema = `txo_${randomBytes(5).toString('hex')}`;
    let prisma: OrderClient;
    beforeAll(async () => {
      const here = fileURLToPath(new URL('../../../examples/prisma/', import.meta.url));
      await ensurePrismaClient(
        resolve(here, 'schema', `${dialect}.prisma`),
        resolve(here, 'generated', dialect),
        resolve(here, 'prisma.config.ts'),
      );
      await migrateExample(urlOf(dialect), schema);
      prisma = await openExampleClient(urlOf(dialect), schema);
    });
    afterAll(async () => {
      await prisma?.$queryRawUnsafe(dialect === 'postgres' ? `DROP SCHEMA "${schema}" CASCADE` : `DROP DATABASE \`${schema}\``);
      await prisma?.$disconnect();
    });

    it('places an order: the order row and its orders.placed message commit together', async () => {
      expect(dialectOf(urlOf(dialect))).toBe(dialect);
      const outbox = createOutbox({ dialect, schema });
      const placed = await placeOrder(prisma, outbox, { customer: 'alice', total: 42.5 });
      const q = (table: string) => (dialect === 'postgres' ? `"${schema}"."${table}"` : `\`${schema}\`.\`${table}\``);
      const orders = (await prisma.$queryRawUnsafe(`SELECT id, customer, total FROM ${q('orders')}`)) as Record<
        string,
        unknown
      >[];
      expect(orders.map((row) => [row.id, row.customer, Number(String(row.total))])).toEqual([[placed.orderId, 'alice', 42.5]]);
      const messages = (await prisma.$queryRawUnsafe(`SELECT id, topic, msg_key, payload FROM ${q('txoutbox')}`)) as Record<
        string,
        unknown
      >[];
      expect(messages).toHaveLength(1);
      // Text columns on PostgreSQL, VARBINARY on MySQL.
      const text = (value: unknown) => Buffer.from(value as string | Uint8Array).toString('utf8');
      const [message] = messages;
      expect([text(message!.id), text(message!.topic), text(message!.msg_key)]).toEqual([
        placed.messageId,
        'orders.placed',
        'alice',
      ]);
      expect(JSON.parse(text(message!.payload))).toEqual({ id: placed.orderId, customer: 'alice', total: 42.5 });
    });
  });
}
