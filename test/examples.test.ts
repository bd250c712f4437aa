import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { AMQP_URL, consumedQueue } from './support/brokers/rabbitmq-fixture.js';
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
