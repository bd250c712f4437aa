/**
 * The order service's flow in NestJS with TypeORM and @nestjs-cls/transactional: `OrderService.placeOrder` is a
 * `@Transactional()` method that inserts the order through `txHost.tx` (the transaction's EntityManager) and
 * enqueues `orders.placed` with `fromTypeorm(txHost.tx)`; TxOutboxModule provides the outbox and runs the relay
 * with the application (here into txoutbox's in-memory broker, so the example needs nothing else).
 *
 *   DATABASE_URL=postgres://root@127.0.0.1:5432/test node --import tsx examples/nestjs/place-order.ts
 *   DATABASE_URL=mysql://root@127.0.0.1:3306/test node --import tsx examples/nestjs/place-order.ts
 *
 * No decorator here needs emitted metadata (this repository compiles without it): providers are factories with
 * `inject`, and decorators are applied as calls. In an application compiled with `experimentalDecorators` and
 * `emitDecoratorMetadata`, write them the usual way: `@Injectable()`, `@Inject(TXOUTBOX_OUTBOX)`, `@Transactional()`.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Module, type DynamicModule } from '@nestjs/common';
import { ClsPluginTransactional, Transactional, TransactionHost } from '@nestjs-cls/transactional';
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import { ClsModule } from 'nestjs-cls';
import pg from 'pg';
import type { DataSource } from 'typeorm';
import { MemoryBroker, type Broker, type Outbox } from '../../src/index.js';
import { TXOUTBOX_OUTBOX, TxOutboxModule } from '../../src/orm/nestjs.js';
import { fromTypeorm } from '../../src/orm/typeorm.js';
import { dialectOf, orderDataSource, OrderEntity, type Order } from '../typeorm/place-order.js';
import { TransactionalAdapterTypeOrm } from '@nestjs-cls/transactional-adapter-typeorm';

export const DATA_SOURCE = Symbol('DATA_SOURCE');
export const RELAY_DB = Symbol('RELAY_DB');

export class OrderService {
  constructor(
    private readonly outbox: Outbox,
    private readonly txHost: TransactionHost<TransactionalAdapterTypeOrm>,
  ) {}

  /** @Transactional(): the order and its message commit together, or neither exists. */
  async placeOrder(input: {
    customer: string;
    total: number;
    failAfterEnqueue?: boolean;
  }): Promise<{ orderId: string; messageId: string }> {
    const order: Order = { id: randomUUID(), customer: input.customer, total: input.total };
    await this.txHost.tx.insert(OrderEntity, order);
    const { id } = await this.outbox.enqueue(fromTypeorm(this.txHost.tx), {
      topic: 'orders.placed',
      key: order.customer,
      payload: { ...order },
    });
    if (input.failAfterEnqueue === true) throw new Error('payment declined');
    return { orderId: order.id, messageId: id };
  }
}
// `@Transactional()` on placeOrder, applied as a (legacy) method decorator call.
const placeOrder = Object.getOwnPropertyDescriptor(OrderService.prototype, 'placeOrder')!;
Transactional()(OrderService.prototype, 'placeOrder', placeOrder);
Object.defineProperty(OrderService.prototype, 'placeOrder', placeOrder);

/** The database: TypeORM's DataSource (migrated with TypeORM's migrations) and a Kysely pool of the relay's own. */
export class DatabaseModule {
  static forUrl(url: string, schema?: string): DynamicModule {
    const dialect = dialectOf(url);
    return {
      module: DatabaseModule,
      global: true,
      providers: [
        {
          provide: DATA_SOURCE,
          useFactory: async () => {
            const dataSource = await orderDataSource(url, schema).initialize();
            await dataSource.runMigrations(); // deploy-time work, here so the example runs with one command
            return dataSource;
          },
        },
        {
          provide: RELAY_DB,
          useFactory: () =>
            dialect === 'postgres'
              ? new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 4 }) }) })
              : new Kysely<unknown>({
                  dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 4, timezone: 'Z' }) }),
                }),
        },
        {
          // Closes both pools once the relay has stopped (TxOutboxModule stops it in onModuleDestroy, before this).
          provide: Symbol('CLOSE_DATABASE'),
          useFactory: (dataSource: DataSource, db: Kysely<unknown>) => ({
            closed: false,
            async onApplicationShutdown() {
              if (this.closed) return;
              this.closed = true;
              await db.destroy();
              await dataSource.destroy();
            },
          }),
          inject: [DATA_SOURCE, RELAY_DB],
        },
      ],
      exports: [DATA_SOURCE, RELAY_DB],
    };
  }
}
Module({})(DatabaseModule);

export class OrdersModule {
  /** The application: database, CLS with transactions, txoutbox (outbox + relay into `broker`) and the service. */
  static forUrl(url: string, broker: Broker, schema?: string): DynamicModule {
    const dialect = dialectOf(url);
    const database = DatabaseModule.forUrl(url, schema);
    const where = schema === undefined ? {} : { schema };
    return {
      module: OrdersModule,
      imports: [
        database,
        ClsModule.forRoot({
          global: true,
          plugins: [
            new ClsPluginTransactional({
              imports: [database],
              adapter: new TransactionalAdapterTypeOrm({ dataSourceToken: DATA_SOURCE }),
            }),
          ],
        }),
        TxOutboxModule.forRootAsync({
          inject: [RELAY_DB],
          useFactory: (db: Kysely<unknown>) => ({
            outbox: { dialect, ...where },
            relay: { db, dialect, broker, pollIntervalMs: 100, ...where },
            drainMs: 5_000,
          }),
        }),
      ],
      providers: [
        {
          provide: OrderService,
          useFactory: (outbox: Outbox, txHost: TransactionHost<TransactionalAdapterTypeOrm>) => new OrderService(outbox, txHost),
          inject: [TXOUTBOX_OUTBOX, TransactionHost],
        },
      ],
      exports: [OrderService],
    };
  }
}
Module({})(OrdersModule);

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const url = process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/test';
  const broker = new MemoryBroker();
  // Through require(), as nestjs-cls (CommonJS) loads @nestjs/core: under tsx an import() and a require() of the
  // ESM-only @nestjs/core give two copies, and nestjs-cls would ask for the other copy's HttpAdapterHost.
  const { NestFactory } = createRequire(import.meta.url)('@nestjs/core') as typeof import('@nestjs/core');
  const app = await NestFactory.createApplicationContext(OrdersModule.forUrl(url, broker), { logger: ['error', 'warn'] });
  const placed = await app.get(OrderService).placeOrder({ customer: 'alice', total: 42 });
  console.log(`order ${placed.orderId} placed, message ${placed.messageId} in the outbox`);
  while (!broker.received('orders.placed').some((message) => message.id === placed.messageId))
    await new Promise((r) => setTimeout(r, 50));
  console.log(`the relay published ${placed.messageId} to the broker`);
  await app.close();
}
