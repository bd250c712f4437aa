/**
 * `npm run demo`: txoutbox end to end, narrated. With no configuration it runs on an embedded PostgreSQL (PGlite)
 * and the in-memory broker; with OUTBOX_PG_URL and OUTBOX_AMQP_URL set it uses that PostgreSQL and RabbitMQ.
 */
import { Kysely, PostgresDialect, sql } from 'kysely';
import {
  MemoryBroker,
  createInbox,
  createOutbox,
  createRelay,
  migrate,
  migrateInbox,
  type Broker,
  type Relay,
} from '../src/index.js';
import { adminStoreFor } from '../src/dialects/index.js';
import { tableNames } from '../src/dialects/identifiers.js';

const SCHEMA = 'txoutbox_demo';
const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const dim = (text: string) => (process.stdout.isTTY ? `\x1b[2m${text}\x1b[0m` : text);
const step = (n: number, text: string) => console.log(`\n${bold(`${n}. ${text}`)}`);
const say = (text: string) => console.log(`   ${text}`);
const redact = (url: string) => url.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');

/** What the demo needs from a broker: publish, see what arrived, and a destination that is broken until fixed. */
interface DemoBroker {
  label: string;
  broker: Broker;
  received(): Promise<{ id: string; topic: string; payload: string }[]>;
  /** Makes `topic` fail permanently (no such destination) until `fix` is called. */
  breakTopic(topic: string): Promise<void>;
  fix(topic: string): Promise<void>;
  close(): Promise<void>;
}

interface Database {
  label: string;
  db: Kysely<any>;
  close(): Promise<void>;
}

async function openDatabase(): Promise<Database> {
  const url = process.env.OUTBOX_PG_URL;
  if (url !== undefined && url !== '') {
    const { default: pg } = await import('pg');
    const pool = new pg.Pool({ connectionString: url, max: 4 });
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
    await sql`DROP SCHEMA IF EXISTS ${sql.id(SCHEMA)} CASCADE`.execute(db);
    return { label: `PostgreSQL at ${redact(url)} (schema ${SCHEMA}, dropped first)`, db, close: () => db.destroy() };
  }
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGliteDialect } = await import('./pglite-dialect.js');
  const db = new Kysely<any>({ dialect: new PGliteDialect(new PGlite()) });
  return {
    label: 'embedded PostgreSQL (PGlite, in memory: nothing to install, nothing left behind)',
    db,
    close: () => db.destroy(),
  };
}

async function openBroker(): Promise<DemoBroker> {
  const url = process.env.OUTBOX_AMQP_URL;
  if (url !== undefined && url !== '' && process.env.OUTBOX_PG_URL) {
    const { default: amqp } = await import('amqplib');
    const { createRabbitMqBroker } = await import('../src/brokers/rabbitmq.js');
    const prefix = `txoutbox-demo-${process.pid}`;
    const queueOf = (topic: string) => `${prefix}.${topic}`;
    const connection = await amqp.connect(url);
    const channel = await connection.createChannel();
    const received: { id: string; topic: string; payload: string }[] = [];
    const queues: string[] = [];
    const consume = async (topic: string) => {
      await channel.assertQueue(queueOf(topic), { durable: true });
      queues.push(queueOf(topic));
      await channel.consume(queueOf(topic), (m) => {
        if (m === null) return;
        received.push({ id: String(m.properties.messageId), topic, payload: m.content.toString() });
        channel.ack(m);
      });
    };
    const broker = createRabbitMqBroker({ url, route: (message) => ({ exchange: '', routingKey: queueOf(message.topic) }) });
    await consume('orders.placed');
    return {
      label: `RabbitMQ at ${redact(url)} (a durable queue per topic, named ${prefix}.<topic>)`,
      broker,
      received: async () => [...received],
      // An unroutable message is a permanent failure for the RabbitMQ adapter: its queue simply does not exist yet.
      breakTopic: async () => {},
      fix: consume,
      async close() {
        await broker.close();
        for (const queue of queues) await channel.deleteQueue(queue).catch(() => {});
        await connection.close();
      },
    };
  }
  const broker = new MemoryBroker();
  return {
    label: 'the in-memory broker (MemoryBroker)',
    broker,
    received: async () => broker.received().map((m) => ({ id: m.id, topic: m.topic, payload: m.payload.toString() })),
    breakTopic: async (topic) =>
      void broker.fail({ kind: 'permanent', error: `no queue is bound to '${topic}'` }, { where: (m) => m.topic === topic }),
    fix: async () => void broker.heal(),
    close: async () => {},
  };
}

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`the demo waited too long for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function main(): Promise<void> {
  console.log(bold('txoutbox demo: your database commit and your broker publish, made one.'));
  const database = await openDatabase();
  const demoBroker = await openBroker();
  const { db } = database;
  let relay: Relay | undefined;
  try {
    step(1, 'Set up');
    say(`database: ${database.label}`);
    say(`broker:   ${demoBroker.label}`);
    await migrate(db, { dialect: 'postgres', schema: SCHEMA });
    await sql`CREATE TABLE ${sql.id(SCHEMA, 'orders')} (id text PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)`.execute(
      db,
    );
    say(`migrated: ${SCHEMA}.txoutbox (the outbox) next to ${SCHEMA}.orders (your business table)`);
    // The consuming side. In a real system it is another service with its own database; here it shares the demo's.
    await migrateInbox(db, { dialect: 'postgres', schema: SCHEMA });
    await sql`CREATE TABLE ${sql.id(SCHEMA, 'shipments')} (id serial PRIMARY KEY, order_id text NOT NULL)`.execute(db);
    say(`migrated: ${SCHEMA}.txoutbox_inbox (a consumer's inbox) next to ${SCHEMA}.shipments (that consumer's table)`);
    const outbox = createOutbox({ dialect: 'postgres', schema: SCHEMA });
    const admin = adminStoreFor('postgres', db, tableNames('txoutbox', SCHEMA));
    const count = async (table: string) =>
      Number((await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(SCHEMA, table)}`.execute(db)).rows[0]!.n);

    const placeOrder = (id: string, customer: string, total: number, fail = false) =>
      db.transaction().execute(async (trx) => {
        await sql`INSERT INTO ${sql.id(SCHEMA, 'orders')} (id, customer, total) VALUES (${id}, ${customer}, ${total})`.execute(
          trx,
        );
        const [result] = await outbox.enqueue(trx, [
          { topic: 'orders.placed', key: customer, payload: { orderId: id, customer, total } },
        ]);
        if (fail) throw new Error('card declined');
        return result!.id;
      });

    step(2, 'Place orders: the order row and its message commit together, or not at all');
    const first = await placeOrder('order-1', 'alice', 42);
    say(`order-1 committed -> message ${first} is in the outbox`);
    await placeOrder('order-2', 'bob', 17, true).catch((error: Error) =>
      say(`order-2 rolled back (${error.message}) -> its message is gone too`),
    );
    say(
      `orders: ${await count('orders')} row(s), outbox: ${await count('txoutbox')} message(s)  ${dim('(nothing about order-2 anywhere)')}`,
    );

    step(3, 'Start a relay: it claims committed messages and deletes them only after the broker acknowledges');
    relay = createRelay({
      db,
      dialect: 'postgres',
      schema: SCHEMA,
      broker: demoBroker.broker,
      concurrency: 1,
      pollIntervalMs: 100,
      backoff: { initialMs: 50, maxMs: 200 },
    });
    relay.on('published', (messages) => {
      for (const m of messages) say(`${dim('relay:')} published ${m.topic} ${m.id} (key ${m.key ?? '-'}, attempt ${m.attempt})`);
    });
    relay.on('dead', (messages) => {
      for (const { message, error } of messages) say(`${dim('relay:')} dead-lettered ${message.id}: ${error}`);
    });
    relay.start();
    await until(async () => (await demoBroker.received()).some((m) => m.id === first), 'order-1 to be published');
    const [arrived] = (await demoBroker.received()).filter((m) => m.id === first);
    say(`the broker got ${arrived!.topic}: ${arrived!.payload}`);
    await until(async () => (await count('txoutbox')) === 0, 'the outbox to empty');
    say(`outbox: ${await count('txoutbox')} message(s) left`);

    step(4, 'A poison message: dead-lettered, visible, retried by a person; its key waits so order holds');
    await demoBroker.breakTopic('payments.captured');
    const [poison, behind] = await db.transaction().execute((trx) =>
      outbox.enqueue(trx, [
        { topic: 'payments.captured', key: 'carol', payload: { orderId: 'order-3', amount: 99 } },
        { topic: 'payments.captured', key: 'carol', payload: { orderId: 'order-3', refund: 99 } },
      ]),
    );
    await until(async () => (await admin.listDead({}, 10)).length === 1, 'the poison message to be dead-lettered');
    const [dead] = await admin.listDead({}, 10);
    say(
      `txoutbox dead list -> ${dead!.id} (${dead!.topic}, key ${dead!.key}) after ${dead!.attempts} attempt(s): ${dead!.lastError}`,
    );
    say(`its key is blocked: ${behind!.id} waits behind it (per-key order); other keys keep flowing`);
    const dan = await placeOrder('order-4', 'dan', 5);
    await until(async () => (await demoBroker.received()).some((m) => m.id === dan), 'order-4 to flow past the dead letter');
    say('someone fixes the destination ...');
    await demoBroker.fix('payments.captured');
    await admin.retryDead([dead!.seq]);
    say(`txoutbox dead retry ${dead!.id} -> pending again`);
    await until(
      async () => (await demoBroker.received()).some((m) => m.id === behind!.id),
      'the retried message and the one behind it',
    );
    const order = (await demoBroker.received()).filter((m) => m.topic === 'payments.captured').map((m) => m.id);
    say(
      `published in key order: ${order.join(' then ')}  ${dim(`(${poison!.id === order[0] ? 'the retried one first' : 'order broken!'})`)}`,
    );

    step(5, 'Consume once: at-least-once delivery can bring a message twice; the inbox applies it once');
    const inbox = createInbox({ dialect: 'postgres', schema: SCHEMA });
    // What a consumer does per delivery (createRabbitMqInboxConsumer does this for you): one transaction that records
    // the id in the inbox and applies the effect, so both commit or neither does. No unique key on order_id: without
    // the inbox, a second delivery would ship twice.
    const deliver = (message: { id: string; payload: string }) =>
      db.transaction().execute((trx) =>
        inbox.processOnce(trx, { consumer: 'shipping', messageId: message.id }, async (trx) => {
          const { orderId } = JSON.parse(message.payload) as { orderId: string };
          await sql`INSERT INTO ${sql.id(SCHEMA, 'shipments')} (order_id) VALUES (${orderId})`.execute(trx);
        }),
      );
    const shipments = async () =>
      Number(
        (
          await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(SCHEMA, 'shipments')} WHERE order_id = 'order-1'`.execute(
            db,
          )
        ).rows[0]!.n,
      );
    say(`the shipping service gets ${arrived!.id} (order-1) and ships it, inside its own transaction:`);
    const once = await deliver(arrived!);
    say(`  delivery 1 -> ${once.duplicate ? 'skipped as a duplicate' : 'applied'}; shipments for order-1: ${await shipments()}`);
    say(`its ack is lost (a crash, a dropped connection), so the broker delivers ${arrived!.id} again:`);
    const twice = await deliver(arrived!);
    say(
      `  delivery 2 -> ${twice.duplicate ? 'skipped as a duplicate (the inbox has this id)' : 'applied again!'}; shipments for order-1: ${await shipments()}`,
    );

    step(6, 'Done');
    const total = (await demoBroker.received()).length;
    say(
      `${total} message(s) published, 1 rolled back and never sent, 1 dead-lettered and recovered, outbox empty: ${(await count('txoutbox')) === 0}`,
    );
    say(`next: run the sidecar with \`npx txoutbox relay --config txoutbox.yaml\` (see docs/sidecar.md), or \`npm test\`.`);
  } finally {
    await relay?.stop({ drainMs: 1000 });
    await demoBroker.close();
    if (process.env.OUTBOX_PG_URL) await sql`DROP SCHEMA IF EXISTS ${sql.id(SCHEMA)} CASCADE`.execute(db).catch(() => {});
    await database.close();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
