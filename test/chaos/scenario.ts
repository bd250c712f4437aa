import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { createInbox, createOutbox, migrate, migrateInbox, type DialectName, type OutboxMessage } from '../../src/index.js';
import { chaosBroker, type BrokerName, type ChaosBroker } from './brokers.js';
import { CHAOS_APPLICATION, type RelayProcessConfig } from './relay-config.js';

/** One chaos run: a steady producer, relay processes, the faults to inject, and what to check afterwards. */
export interface ChaosPlan {
  name: string;
  dialect: DialectName;
  /** The database URL (PostgreSQL or MySQL/MariaDB); the run creates and drops its own schema/database there. */
  url: string;
  broker: BrokerName;
  relays: number;
  messages: number;
  /** Committed messages per second, in transactions of 10. */
  rate: number;
  keys: number;
  /** SIGKILLs of a random relay, spread over the producing time; each is restarted after `restartAfterMs`. */
  kills: number;
  /** Broker restarts (stop, start) while producing. */
  brokerRestarts: number;
  /** Rounds of killing every database connection the relays hold, while producing. */
  databaseKills: number;
  /** Every n-th message is poison: routed where the broker has no destination, under a key of its own. */
  poisonEvery?: number;
  restartAfterMs?: number;
  /** Longest wait, after the last commit, for every healthy message to arrive. */
  settleTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface ChaosReport {
  name: string;
  committed: number;
  poison: number;
  /** Healthy messages committed but never received. Must be 0. */
  lost: number;
  /** Keys whose messages (in first-arrival order) differ from their commit order. Must be 0. */
  reordered: number;
  /** Deliveries beyond the first of an id, at the broker (at-least-once); an inbox drops them. */
  duplicates: number;
  /** Effects applied more than once by a consumer service behind the inbox. Must be 0. */
  duplicatesAfterInbox: number;
  /** Healthy messages whose effect that consumer never applied. Must be 0. */
  missingEffects: number;
  /** Poison messages dead in the outbox table, and healthy ones (must be 0). */
  deadPoison: number;
  deadHealthy: number;
  /** Rows other than dead poison left in the outbox table. Must be 0. */
  rowsLeft: number;
  kills: number;
  brokerRestarts: number;
  /** Per broker restart: ms from the broker answering again to the next new message at the consumer. */
  resumeMs: number[];
  databaseKills: number;
  /** Relay processes that exited non-zero on the final SIGTERM. Must be 0. */
  uncleanExits: number;
  /** Healthy messages per second, from the first commit to the last healthy arrival. */
  healthyRate: number;
  seconds: number;
}

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const TOPIC = 'chaos.orders';
const POISON_TOPIC = 'chaos.poison';
const BATCH = 10;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The sidecar's config for one chaos relay: one database, one table, one broker for every topic, no HTTP. */
function sidecarConfig(config: RelayProcessConfig): unknown {
  const url = new URL(config.url);
  // PostgreSQL: the relays' connections carry a name of their own, so the suite can kill exactly those.
  if (config.dialect === 'postgres') url.searchParams.set('application_name', CHAOS_APPLICATION);
  const broker =
    config.broker.type === 'rabbitmq'
      ? {
          type: 'rabbitmq',
          url: config.broker.url,
          routes: config.broker.routes,
        }
      : { type: 'nats', servers: config.broker.url, routes: config.broker.routes };
  return {
    databases: [
      {
        name: 'chaos',
        dialect: config.dialect,
        url: url.toString(),
        schema: config.schema,
        poolSize: 6,
        tables: [{ table: 'txoutbox' }],
      },
    ],
    brokers: { chaos: broker },
    routes: { '*': 'chaos' },
    relay: { ...config.relay, retainSentMs: 0, drainMs: 5000 },
    http: { enabled: false },
    log: { level: 'info' },
  };
}

/** A `txoutbox relay` process (the real CLI, from source) that can be killed and started again. */
class RelayProcess {
  private child: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);
  private readonly configPath: string;

  constructor(config: RelayProcessConfig, directory: string) {
    this.configPath = join(directory, `${config.instanceId}.json`);
    writeFileSync(this.configPath, JSON.stringify(sidecarConfig(config)));
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, '--config', this.configPath, 'relay'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      let output = '';
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        // The sidecar logs "relaying N table(s)" once its relays run; after that its log is not needed.
        if (output.includes('"msg":"relaying')) {
          child.stdout!.off('data', onData);
          child.stdout!.resume();
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`txoutbox relay exited with ${code} before it was ready:\n${output}`)));
    });
  }

  /** A crash: no drain, no lease given back. */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
    this.child = null;
  }

  /** A graceful stop (SIGTERM: drain, give leases back); resolves to the exit code. */
  async stop(): Promise<number | null> {
    if (this.child === null) return 0;
    this.child.kill('SIGTERM');
    const code = await this.exited;
    this.child = null;
    return code;
  }
}

function producerDatabase(plan: ChaosPlan): Kysely<unknown> {
  if (plan.dialect === 'postgres')
    return new Kysely({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: plan.url, max: 4 }) }) });
  return new Kysely({
    dialect: new MysqlDialect({ pool: mysql.createPool({ uri: plan.url, connectionLimit: 4, timezone: 'Z' }) }),
  });
}

async function killRelayConnections(db: Kysely<unknown>, dialect: DialectName, schema: string): Promise<number> {
  if (dialect === 'postgres') {
    const { rows } =
      await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ${CHAOS_APPLICATION}`.execute(db);
    return rows.length;
  }
  const { rows } = await sql<{ id: number }>`SELECT id FROM information_schema.processlist WHERE db = ${schema}`.execute(db);
  for (const { id } of rows) await sql`KILL ${sql.raw(String(Number(id)))}`.execute(db).catch(() => undefined);
  return rows.length;
}

export async function runChaos(plan: ChaosPlan): Promise<ChaosReport> {
  const log = plan.log ?? (() => undefined);
  const began = performance.now();
  const schema = `chaos_${randomBytes(4).toString('hex')}`;
  const db = producerDatabase(plan);
  const broker: ChaosBroker = await chaosBroker(plan.broker, { [TOPIC]: 'orders', [POISON_TOPIC]: null });
  const relays: RelayProcess[] = [];
  const closers: (() => Promise<void>)[] = [];
  const directory = mkdtempSync(join(tmpdir(), 'txoutbox-chaos-'));
  try {
    await migrate(db, { dialect: plan.dialect, schema });
    const outbox = createOutbox({ dialect: plan.dialect, schema });
    // A consumer service: each message's effect adds one to its row, through the inbox, in one transaction.
    await migrateInbox(db, { dialect: plan.dialect, schema });
    const effects = sql.id(schema, 'effects');
    await (
      plan.dialect === 'postgres'
        ? sql`CREATE TABLE ${effects} (id text PRIMARY KEY, times integer NOT NULL)`
        : sql`CREATE TABLE ${effects} (id VARCHAR(255) PRIMARY KEY, times INT NOT NULL) ENGINE=InnoDB`
    ).execute(db);
    const inbox = createInbox({ dialect: plan.dialect, schema });
    const inboxConsumer = await broker.consumeThroughInbox(db, inbox, (message, trx) =>
      (plan.dialect === 'postgres'
        ? sql`INSERT INTO ${effects} AS e (id, times) VALUES (${message.id}, 1) ON CONFLICT (id) DO UPDATE SET times = e.times + 1`
        : sql`INSERT INTO ${effects} (id, times) VALUES (${message.id}, 1) ON DUPLICATE KEY UPDATE times = times + 1`
      ).execute(trx),
    );
    closers.push(() => inboxConsumer.close());
    const relayUrl = new URL(plan.url);
    if (plan.dialect === 'mysql') relayUrl.pathname = `/${schema}`;
    for (let n = 0; n < plan.relays; n++) {
      const relay = new RelayProcess(
        {
          dialect: plan.dialect,
          url: relayUrl.toString(),
          schema,
          instanceId: `${plan.name}-relay-${n}`,
          broker: broker.relayConfig,
          relay: {
            batchSize: 50,
            concurrency: 2,
            leaseMs: 3000,
            publishTimeoutMs: 2000,
            maxAttempts: 30,
            backoff: { initialMs: 100, maxMs: 1000 },
          },
        },
        directory,
      );
      await relay.start();
      relays.push(relay);
    }

    // The producer: transactions of BATCH messages at a steady rate; a key's messages in commit order.
    const expected = new Map<string, string[]>();
    const poisonIds = new Set<string>();
    let committed = 0;
    let firstCommit = 0;
    const produceMs = (plan.messages / plan.rate) * 1000;
    const producing = (async () => {
      const start = performance.now();
      for (let n = 0; n < plan.messages; n += BATCH) {
        const messages: OutboxMessage[] = [];
        for (let i = n; i < Math.min(n + BATCH, plan.messages); i++) {
          const poison = plan.poisonEvery !== undefined && i % plan.poisonEvery === plan.poisonEvery - 1;
          const id = `${plan.name}-${i}`;
          if (poison) poisonIds.add(id);
          messages.push({
            id,
            topic: poison ? POISON_TOPIC : TOPIC,
            key: poison ? `poison-${i}` : `key-${i % plan.keys}`,
            payload: { i },
          });
        }
        await db.transaction().execute((trx) => outbox.enqueue(trx, messages));
        if (firstCommit === 0) firstCommit = performance.now();
        for (const m of messages) if (!poisonIds.has(m.id!)) expected.set(m.key!, [...(expected.get(m.key!) ?? []), m.id!]);
        committed += messages.length;
        const due = start + ((n + BATCH) / plan.rate) * 1000;
        await sleep(Math.max(0, due - performance.now()));
      }
    })();

    // The faults, spread over the producing time.
    type Fault = { at: number; run: () => Promise<void> };
    const faults: Fault[] = [];
    const spread = (count: number, offset: number) =>
      Array.from({ length: count }, (_, i) => ((i + offset) / (count + 1)) * produceMs);
    let kills = 0;
    let brokerRestarts = 0;
    let databaseKills = 0;
    const resumeMs: number[] = [];
    for (const at of spread(plan.kills, 1)) {
      faults.push({
        at,
        run: async () => {
          const victim = relays[Math.floor(Math.random() * relays.length)]!;
          await victim.kill();
          kills++;
          await sleep(plan.restartAfterMs ?? 300);
          await victim.start();
        },
      });
    }
    for (const at of spread(plan.brokerRestarts, 0.5)) {
      faults.push({
        at,
        run: async () => {
          log(`${plan.name}: restarting ${plan.broker}`);
          await broker.restart();
          brokerRestarts++;
          const back = performance.now();
          const before = await broker.progress();
          const deadline = back + 60_000;
          while ((await broker.progress()) <= before && performance.now() < deadline) await sleep(20);
          resumeMs.push(performance.now() - back);
        },
      });
    }
    for (const at of spread(plan.databaseKills, 0.7)) {
      faults.push({
        at,
        run: async () => {
          await killRelayConnections(db, plan.dialect, schema);
          databaseKills++;
        },
      });
    }
    faults.sort((a, b) => a.at - b.at);
    const injecting = (async () => {
      const start = performance.now();
      for (const fault of faults) {
        await sleep(Math.max(0, start + fault.at - performance.now()));
        await fault.run();
      }
    })();
    await Promise.all([producing, injecting]);
    log(
      `${plan.name}: ${committed} committed, ${kills} kills, ${brokerRestarts} broker restarts, ${databaseKills} database kills; settling`,
    );

    // Every healthy message must arrive; poison ones must end dead.
    const healthy = committed - poisonIds.size;
    const deadline = performance.now() + (plan.settleTimeoutMs ?? 120_000);
    let lastArrival = performance.now();
    for (let seen = 0; performance.now() < deadline; await sleep(100)) {
      const unique = new Set((await broker.receivedIds()).filter((id) => !poisonIds.has(id))).size;
      if (unique > seen) lastArrival = performance.now();
      seen = unique;
      if (unique >= healthy && (await deadCount(db, schema)) >= poisonIds.size && (await effectCount(db, schema)) >= healthy)
        break;
    }
    const exits = await Promise.all(relays.map((relay) => relay.stop()));
    relays.length = 0;

    const received = await broker.received();
    const ids = new Set(received.map((m) => m.id));
    let lost = 0;
    let reordered = 0;
    for (const [key, order] of expected) {
      lost += order.filter((id) => !ids.has(id)).length;
      const firstSeen = [...new Set(received.filter((m) => m.key === key).map((m) => m.id))];
      if (firstSeen.join() !== order.filter((id) => ids.has(id)).join()) reordered++;
    }
    const rows = await outboxRows(db, schema);
    const applied = await sql<{ id: string; times: number }>`SELECT id, times FROM ${sql.id(schema, 'effects')}`.execute(db);
    const times = new Map(applied.rows.map((row) => [row.id, Number(row.times)]));
    const deadPoison = rows.filter((row) => row.state === 'dead' && poisonIds.has(row.id)).length;
    return {
      name: plan.name,
      committed,
      poison: poisonIds.size,
      lost,
      reordered,
      duplicates: received.filter((m) => !poisonIds.has(m.id)).length - [...ids].filter((id) => !poisonIds.has(id)).length,
      duplicatesAfterInbox: [...times.values()].reduce((n, t) => n + t - 1, 0),
      missingEffects: [...expected.values()].flat().filter((id) => !times.has(id)).length,
      deadPoison,
      deadHealthy: rows.filter((row) => row.state === 'dead' && !poisonIds.has(row.id)).length,
      rowsLeft: rows.length - deadPoison,
      kills,
      brokerRestarts,
      resumeMs,
      databaseKills,
      uncleanExits: exits.filter((code) => code !== 0).length,
      healthyRate: healthy / ((lastArrival - firstCommit) / 1000),
      seconds: (performance.now() - began) / 1000,
    };
  } finally {
    await Promise.all(relays.map((relay) => relay.kill()));
    for (const close of closers) await close().catch(() => undefined);
    await broker.close();
    await sql`DROP ${sql.raw(plan.dialect === 'postgres' ? 'SCHEMA' : 'DATABASE')} IF EXISTS ${sql.id(schema)} ${sql.raw(plan.dialect === 'postgres' ? 'CASCADE' : '')}`
      .execute(db)
      .catch(() => undefined);
    await db.destroy();
    rmSync(directory, { recursive: true, force: true });
  }
}

async function outboxRows(db: Kysely<unknown>, schema: string): Promise<{ id: string; state: string }[]> {
  const { rows } = await sql<{ id: string | Buffer; state: string }>`SELECT id, state FROM ${sql.id(schema, 'txoutbox')}`.execute(
    db,
  );
  return rows.map((row) => ({ id: Buffer.isBuffer(row.id) ? row.id.toString('utf8') : row.id, state: row.state }));
}

async function effectCount(db: Kysely<unknown>, schema: string): Promise<number> {
  const { rows } = await sql<{ n: number | string }>`SELECT count(*) AS n FROM ${sql.id(schema, 'effects')}`.execute(db);
  return Number(rows[0]!.n);
}

async function deadCount(db: Kysely<unknown>, schema: string): Promise<number> {
  const { rows } = await sql<{
    n: number | string;
  }>`SELECT count(*) AS n FROM ${sql.id(schema, 'txoutbox')} WHERE state = 'dead'`.execute(db);
  return Number(rows[0]!.n);
}
