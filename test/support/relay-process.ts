// A relay in a process of its own, to be killed with SIGKILL like a crashed host. It publishes the topic
// `orders.created` to a RabbitMQ queue and tells its parent (IPC) which ids RabbitMQ confirmed, pausing after each
// confirmed batch before the relay marks it sent: the window in which a crash makes the next relay resend.
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { createRabbitMqBroker } from '../../src/brokers/rabbitmq.js';
import { createRelay, type Broker, type DialectName } from '../../src/index.js';

const [dialect, url, schema, queue, amqpUrl, pauseMs] = process.argv.slice(2) as [
  DialectName,
  string,
  string,
  string,
  string,
  string,
];
// Gone with the parent: a test that fails must not leave relays behind.
process.on('disconnect', () => process.exit(1));

const db = new Kysely<unknown>({
  dialect:
    dialect === 'postgres'
      ? new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 4 }) })
      : new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 4, timezone: 'Z' }) }),
});
const rabbit = createRabbitMqBroker({ url: amqpUrl, routes: { 'orders.created': { exchange: '', routingKey: queue } } });
const broker: Broker = {
  name: 'rabbitmq-reporting',
  async publish(messages, context) {
    const outcomes = await rabbit.publish(messages, context);
    const confirmed = messages.filter((_, i) => outcomes[i]?.status === 'ok').map((m) => m.id);
    if (confirmed.length > 0) {
      process.send?.({ confirmed });
      await new Promise((resolve) => setTimeout(resolve, Number(pauseMs)));
    }
    return outcomes;
  },
};
const relay = createRelay({
  db,
  dialect,
  schema,
  broker,
  batchSize: 100,
  leaseMs: 2000,
  publishTimeoutMs: 1000,
  pollIntervalMs: 50,
  instanceId: `child-${process.pid}`,
});
relay.start();
process.send?.({ started: true });
