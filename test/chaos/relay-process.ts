// One relay in its own process, for the chaos suite: SIGKILLed to act out a crash, SIGTERMed to stop gracefully.
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { createRelay, type Broker } from '../../src/index.js';
import { createNatsBroker } from '../../src/brokers/nats.js';
import { createRabbitMqBroker } from '../../src/brokers/rabbitmq.js';
import { CHAOS_APPLICATION, type RelayProcessConfig } from './relay-config.js';

function database(config: RelayProcessConfig): Kysely<unknown> {
  if (config.dialect === 'postgres') {
    const pool = new pg.Pool({ connectionString: config.url, application_name: CHAOS_APPLICATION, max: 6 });
    // Connections killed by the suite emit 'error'; the failed query itself rejects and the relay retries it.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    return new Kysely({ dialect: new PostgresDialect({ pool }) });
  }
  return new Kysely({
    dialect: new MysqlDialect({ pool: mysql.createPool({ uri: config.url, connectionLimit: 6, timezone: 'Z' }) }),
  });
}

function broker(config: RelayProcessConfig): Broker & { close(): Promise<void> } {
  const spec = config.broker;
  if (spec.type === 'rabbitmq') {
    const routes = Object.fromEntries(
      Object.entries(spec.routes).map(([topic, queue]) => [topic, { exchange: '', routingKey: queue }]),
    );
    return createRabbitMqBroker({ url: spec.url, routes });
  }
  return createNatsBroker({ servers: spec.url, routes: spec.routes });
}

const config = JSON.parse(process.argv[2] ?? '') as RelayProcessConfig;
const db = database(config);
const adapter = broker(config);
const relay = createRelay({
  db,
  dialect: config.dialect,
  schema: config.schema,
  broker: adapter,
  instanceId: config.instanceId,
  ...config.relay,
});
relay.on('error', () => undefined); // Database outages are the point of the suite; the relay retries by itself.
relay.start();
process.stdout.write('ready\n');

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  void (async () => {
    await relay.stop({ drainMs: 5000 });
    await adapter.close();
    await db.destroy();
    process.exit(0);
  })();
});
