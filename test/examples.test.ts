import { spawn } from 'node:child_process';
import amqp from 'amqplib';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { DEFAULT_RETRY_DELAYS_MS } from '../src/dedupe/consumers/core.js';
import { AMQP_URL, consumedQueue, randomName, withChannel } from './support/brokers/rabbitmq-fixture.js';
import { CliProcess } from './support/cli.js';
import { waitFor } from './support/relay-helpers.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const started: CliProcess[] = [];
const start = (script: string, args: string[], env: NodeJS.ProcessEnv) => {
  const child = new CliProcess(
    spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  started.push(child);
  return child;
};

afterAll(async () => {
  for (const child of started) if (child.child.exitCode === null && child.child.signalCode === null) child.kill('SIGKILL');
  await Promise.all(started.map((child) => child.exited));
});

/** Examples 1, 2 and 4: the order service on each database, with the sidecar from its own config, to RabbitMQ. */
describe.each(['postgres', 'mysql'] as const)('the order service example on %s with its sidecar', (dialect) => {
  it('POST /orders commits the order and its message, and the sidecar publishes it', async () => {
    const url = dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl');
    const schema = `example_${randomBytes(4).toString('hex')}`;
    const queue = await consumedQueue('txoutbox-example');
    const db =
      dialect === 'postgres'
        ? new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }) })
        : new Kysely<any>({ dialect: new MysqlDialect({ pool: mysql.createPool({ uri: url }) }) });
    try {
      const env = {
        DATABASE_URL: url,
        ORDERS_SCHEMA: schema,
        ORDERS_DIALECT: dialect,
        ORDERS_QUEUE: queue.queue,
        AMQP_URL,
        PORT: '0',
        TXOUTBOX_HTTP_PORT: '0',
      };
      const service = start('examples/order-service/server.ts', [], env);
      await waitFor(() => /listening on (http:\/\/\S+)/.test(service.stdout), 30_000, `the service to listen\n${service.stderr}`);
      const base = /listening on (http:\/\/\S+)/.exec(service.stdout)![1]!;
      const response = await fetch(`${base}/orders`, { method: 'POST', body: JSON.stringify({ customer: 'alice', total: 42 }) });
      expect(response.status).toBe(201);
      const { orderId, messageId } = (await response.json()) as { orderId: string; messageId: string };
      expect((await fetch(`${base}/orders`, { method: 'POST', body: '{"customer":1}' })).status).toBe(400);

      const sidecar = start('src/cli/main.ts', ['relay', '--config', 'examples/order-service/txoutbox.yaml'], env);
      await sidecar.httpUrl();
      await waitFor(() => queue.consumer.received().some((m) => m.id === messageId), 30_000, 'the order message');
      const [message] = queue.consumer.received();
      expect(message).toMatchObject({ id: messageId, key: 'alice' });
      expect(JSON.parse(message!.payload.toString())).toEqual({ id: orderId, customer: 'alice', total: 42 });

      sidecar.kill('SIGTERM');
      service.kill('SIGTERM');
      expect((await sidecar.exited).code).toBe(0);
      expect((await service.exited).code).toBe(0);
    } finally {
      await queue.close();
      await (
        dialect === 'postgres'
          ? sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`
          : sql`DROP DATABASE IF EXISTS ${sql.id(schema)}`
      ).execute(db);
      await db.destroy();
    }
  });
});

/** Example 3: the consumer service applies the order service's messages through the inbox, each exactly once. */
describe('the consumer service example (PostgreSQL, RabbitMQ) behind the order service and its sidecar', () => {
  it('applies every order once into its own table, and skips a redelivered message', async () => {
    const url = inject('pgUrl');
    const suffix = randomBytes(4).toString('hex');
    const ordersSchema = `example_orders_${suffix}`;
    const consumerSchema = `example_totals_${suffix}`;
    const queue = randomName('txoutbox-example-consumer');
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) }) });
    const env = {
      DATABASE_URL: url,
      ORDERS_SCHEMA: ordersSchema,
      CONSUMER_SCHEMA: consumerSchema,
      ORDERS_QUEUE: queue,
      AMQP_URL,
      PORT: '0',
      TXOUTBOX_HTTP_PORT: '0',
    };
    try {
      // The deploy step from its config: an inbox-only database, no broker.
      const migrate = await start('src/cli/main.ts', ['migrate', '--config', 'examples/consumer-service/txoutbox.yaml'], env)
        .exited;
      expect(migrate.stderr).toBe('');
      expect(migrate.stdout).toBe(`customer-totals/${consumerSchema}.txoutbox_inbox: inbox applied 001_create_inbox\n`);

      const consumer = start('examples/consumer-service/consumer.ts', [], env);
      await waitFor(() => consumer.stdout.includes(`consuming ${queue}`), 30_000, `the consumer to start\n${consumer.stderr}`);
      const service = start('examples/order-service/server.ts', [], env);
      await waitFor(() => /listening on (http:\/\/\S+)/.test(service.stdout), 30_000, `the service to listen\n${service.stderr}`);
      const base = /listening on (http:\/\/\S+)/.exec(service.stdout)![1]!;
      const sidecar = start('src/cli/main.ts', ['relay', '--config', 'examples/order-service/txoutbox.yaml'], env);
      await sidecar.httpUrl();

      const orders = [
        { customer: 'alice', total: 42 },
        { customer: 'bob', total: 17 },
        { customer: 'alice', total: 8 },
      ];
      const placed: { orderId: string; messageId: string }[] = [];
      for (const order of orders) {
        const response = await fetch(`${base}/orders`, { method: 'POST', body: JSON.stringify(order) });
        expect(response.status).toBe(201);
        placed.push((await response.json()) as { orderId: string; messageId: string });
      }
      for (const { messageId } of placed) {
        await waitFor(
          () => consumer.stdout.includes(`applied message ${messageId}:`),
          30_000,
          `message ${messageId} to be applied\n${consumer.stdout}\n${consumer.stderr}`,
        );
      }
      const totals = async () =>
        (
          await sql<{ customer: string; orders: number; spent: string }>`
            SELECT customer, orders, spent FROM ${sql.id(consumerSchema, 'customer_totals')} ORDER BY customer`.execute(db)
        ).rows;
      const expected = [
        { customer: 'alice', orders: 2, spent: '50.00' },
        { customer: 'bob', orders: 1, spent: '17.00' },
      ];
      expect(await totals()).toEqual(expected);

      // At-least-once: the same message again (as a relay resends after a lost ack), with its id and payload.
      const [again] = placed;
      const payload = JSON.stringify({ id: again!.orderId, ...orders[0] });
      // A confirm channel: the test goes on only once RabbitMQ has the copy.
      const connection = await amqp.connect(AMQP_URL);
      try {
        const channel = await connection.createConfirmChannel();
        channel.sendToQueue(queue, Buffer.from(payload), { messageId: again!.messageId, persistent: true });
        await channel.waitForConfirms();
      } finally {
        await connection.close();
      }
      await waitFor(
        () => consumer.stdout.includes(`duplicate message ${again!.messageId} skipped`),
        30_000,
        `the redelivery to be skipped\n${consumer.stdout}`,
      );
      expect(await totals()).toEqual(expected);
      const recorded = await sql<{ n: string }>`
        SELECT count(*) AS n FROM ${sql.id(consumerSchema, 'txoutbox_inbox')} WHERE consumer = 'customer-totals'`.execute(db);
      expect(Number(recorded.rows[0]!.n)).toBe(placed.length);
      expect(consumer.stdout.match(/^applied message /gm)).toHaveLength(placed.length);
      expect(consumer.stderr).toBe('');

      for (const child of [sidecar, service, consumer]) child.kill('SIGTERM');
      for (const child of [sidecar, service, consumer]) expect((await child.exited).code).toBe(0);
    } finally {
      await withChannel(async (channel) => {
        for (const name of [queue, ...DEFAULT_RETRY_DELAYS_MS.map((delay) => `${queue}.retry.${delay}ms`)]) {
          await channel.deleteQueue(name).catch(() => {});
        }
      });
      for (const schema of [ordersSchema, consumerSchema]) await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
      await db.destroy();
    }
  });
});
