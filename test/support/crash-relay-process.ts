// A relay in a process of its own whose broker kills the process when it is handed a given message id, as a
// message that crashes the relay would (a native module's fault, an out-of-memory, an unhandled throw). It tells
// its parent (IPC) which ids the in-memory broker accepted, right when it accepts them.
import { Kysely, MysqlDialect, PostgresDialect } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { createRelay, type Broker, type DialectName } from '../../src/index.js';

const [dialect, url, schema, poisonId, leaseMs, maxAttempts] = process.argv.slice(2) as [
  DialectName,
  string,
  string,
  string,
  string,
  string,
];
process.on('disconnect', () => process.exit(1));

const db = new Kysely<unknown>({
  dialect:
    dialect === 'postgres'
      ? new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 4 }) })
      : new MysqlDialect({ pool: mysql.createPool({ uri: url, connectionLimit: 4, timezone: 'Z' }) }),
});
const broker: Broker = {
  name: 'crashing',
  async publish(messages) {
    if (messages.some((m) => m.id === poisonId)) {
      process.send?.({ crashed: messages.map((m) => m.id) });
      // Let the IPC message leave before dying the hard way.
      await new Promise((resolve) => setTimeout(resolve, 20));
      process.kill(process.pid, 'SIGKILL');
    }
    process.send?.({ accepted: messages.map((m) => m.id) });
    return messages.map(() => ({ status: 'ok' as const }));
  },
};
const relay = createRelay({
  db,
  dialect,
  schema,
  broker,
  batchSize: 50,
  leaseMs: Number(leaseMs),
  publishTimeoutMs: Math.floor(Number(leaseMs) / 2),
  maxAttempts: Number(maxAttempts),
  minPollIntervalMs: 20,
  pollIntervalMs: 100,
});
relay.on('dead', (dead) => process.send?.({ dead: dead.map((d) => d.message.id) }));
relay.start();
process.send?.({ started: true });
