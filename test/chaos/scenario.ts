import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, readdirSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { promisify } from 'node:util';
import {
  createInbox,
  createOutbox,
  migrate,
  migrateInbox,
  TxOutboxError,
  type DialectName,
  type OutboxMessage,
} from '../../src/index.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { chaosBroker, type BrokerName, type ChaosBroker } from './brokers.js';
import { CHAOS_APPLICATION, chaosApplicationOf, type RelayProcessConfig } from './relay-config.js';

/** One chaos run: a steady producer, relay processes, the faults to inject, and what to check afterwards. */
export interface ChaosPlan {
  name: string;
  dialect: DialectName;
  /** The database URL (PostgreSQL or MySQL/MariaDB); the run creates and drops its own schema/database there. */
  url: string;
  broker: BrokerName;
  relays: number;
  /** 'logical' (PostgreSQL): the relays stream a replication slot; one holds it, the others stand by. Default 'polling'. */
  mode?: 'polling' | 'logical';
  messages: number;
  /** Committed messages per second, in transactions of 10. */
  rate: number;
  keys: number;
  /**
   * SIGKILLs spread over the producing time, each restarted after `restartAfterMs`: of a random relay, or in mode
   * 'logical' of the one streaming the slot (killing a standby proves nothing).
   */
  kills: number;
  /** Broker restarts (stop, start) while producing. */
  brokerRestarts: number;
  /** Rounds of killing every database connection the relays hold (WAL senders included), while producing. */
  databaseKills: number;
  /** Restarts of the local PostgreSQL server (pg_ctlcluster) while producing; the producer retries what failed. */
  databaseRestarts?: number;
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
  mode: 'polling' | 'logical';
  kills: number;
  /** Mode 'logical': per SIGKILL of the relay streaming the slot, ms from the kill to the first message at the consumer published after another relay took the slot. */
  takeoverMs: number[];
  brokerRestarts: number;
  /** Per broker restart: ms from the broker answering again to the next new message at the consumer. */
  resumeMs: number[];
  databaseKills: number;
  databaseRestarts: number;
  /** Per PostgreSQL restart: ms from the server accepting connections again to the next new message at the consumer. */
  databaseResumeMs: number[];
  /** PostgreSQL restarts that failed (pg_ctl's reason): the server did not stop while the relays ran. Must be empty. */
  databaseRestartFailures: string[];
  /** Faults that could not be injected (their error). Must be empty. */
  faultFailures: string[];
  /** Relay processes that exited by themselves (not killed or stopped by the suite). Must be 0. */
  crashes: number;
  /** Relay processes that exited non-zero on the final SIGTERM. Must be 0. */
  uncleanExits: number;
  /** Where each relay process's log (its stdout) was kept. */
  logDirectory: string;
  /** Healthy messages per second, from the first commit to the last healthy arrival. */
  healthyRate: number;
  seconds: number;
}

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const TOPIC = 'chaos.orders';
const POISON_TOPIC = 'chaos.poison';
const BATCH = 10;
const run = promisify(execFile);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The sidecar's config for one chaos relay: one database, one table, one broker for every topic, no HTTP. */
function sidecarConfig(config: RelayProcessConfig): unknown {
  const url = new URL(config.url);
  // PostgreSQL: the relays' connections carry a name of their own, so the suite can kill exactly those.
  // Named per process: the sidecar streams its slot over this URL too, so the WAL sender names the relay holding it.
  if (config.dialect === 'postgres') url.searchParams.set('application_name', chaosApplicationOf(config.instanceId));
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
    // The logical relay keeps no sent rows unless told to (the sidecar's default for it is 0).
    relay:
      config.logical === undefined
        ? { ...config.relay, retainSentMs: 0, drainMs: 5000 }
        : { ...config.relay, mode: 'logical', ...config.logical, drainMs: 5000 },
    http: { enabled: false },
    log: { level: 'info' },
  };
}

/** A `txoutbox relay` process (the real CLI, from source) that can be killed and started again. */
class RelayProcess {
  private child: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);
  private readonly configPath: string;
  private readonly log: WriteStream;
  readonly instanceId: string;
  /** Exits the suite did not cause (a crash of the relay itself). */
  crashes = 0;

  constructor(
    config: RelayProcessConfig,
    directory: string,
    logDirectory: string,
    private readonly onCrash: (instanceId: string, code: number | null, signal: string | null) => void,
  ) {
    this.instanceId = config.instanceId;
    this.configPath = join(directory, `${config.instanceId}.json`);
    writeFileSync(this.configPath, JSON.stringify(sidecarConfig(config)));
    // Kept after the run: a relay that wedges or dies is diagnosed from its own log.
    this.log = createWriteStream(join(logDirectory, `${config.instanceId}.log`), { flags: 'a' });
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, '--config', this.configPath, 'relay'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    this.log.write(`--- started, pid ${child.pid} at ${new Date().toISOString()}\n`);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.log.write(`--- pid ${child.pid} exited with ${code ?? signal} at ${new Date().toISOString()}\n`);
        // kill() and stop() clear this.child first: any other exit is the relay's own doing.
        if (this.child === child) {
          this.child = null;
          this.crashes++;
          this.onCrash(this.instanceId, code, signal);
        }
        resolve(code);
      }),
    );
    child.stdout!.pipe(this.log, { end: false });
    await new Promise<void>((resolve, reject) => {
      let output = '';
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        // The sidecar logs "relaying N table(s)" once its relays run.
        if (output.includes('"msg":"relaying')) {
          child.stdout!.off('data', onData);
          resolve();
        }
      };
      child.stdout!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`txoutbox relay exited with ${code} before it was ready:\n${output}`)));
    });
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** A crash: no drain, no lease given back. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = null;
    child?.kill('SIGKILL');
    await this.exited;
  }

  /**
   * A graceful stop (SIGTERM: drain, give leases back); resolves to the exit code, or to null when the relay had not
   * exited 20 s later (drainMs is 5 s): it is SIGKILLed then, and counts as an unclean exit.
   */
  async stop(): Promise<number | null> {
    const child = this.child;
    if (child === null) return 0;
    this.child = null;
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const wedged = new Promise<'wedged'>((resolve) => (timer = setTimeout(() => resolve('wedged'), 20_000)));
    const code = await Promise.race([this.exited, wedged]);
    clearTimeout(timer);
    if (code !== 'wedged') return code;
    this.log.write(`--- pid ${child.pid} still running 20 s after SIGTERM: SIGKILL\n`);
    child.kill('SIGKILL');
    await this.exited;
    return null;
  }

  close(): void {
    this.log.end();
  }
}

function producerDatabase(plan: ChaosPlan): Kysely<unknown> {
  if (plan.dialect === 'postgres') {
    const pool = new pg.Pool({ connectionString: plan.url, max: 4 });
    // A client cut off by a server restart: idle, the pool drops it; checked out, the query or transaction using it
    // fails and the producer or the inbox consumer tries again. Unheard, either error would end this process.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    return new Kysely({ dialect: new PostgresDialect({ pool }) });
  }
  return new Kysely({
    dialect: new MysqlDialect({ pool: mysql.createPool({ uri: plan.url, connectionLimit: 4, timezone: 'Z' }) }),
  });
}

async function killRelayConnections(db: Kysely<unknown>, dialect: DialectName, schema: string): Promise<number> {
  if (dialect === 'postgres') {
    // Every chaos relay connection, the WAL sender streaming a slot included (it carries its relay's name too).
    const { rows } = await sql`
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE starts_with(application_name, ${`${CHAOS_APPLICATION}.`}) AND backend_type IN ('client backend', 'walsender')`.execute(db);
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
  const logDirectory = mkdtempSync(join(tmpdir(), `txoutbox-chaos-logs-${plan.name}-`));
  const mode = plan.mode ?? 'polling';
  // The run's own slot and publication: they outlive the schema, so the run drops them when it ends.
  const logical = mode === 'logical' ? { slot: `${schema}_slot`, publication: `${schema}_pub` } : undefined;
  if (logical !== undefined && plan.dialect !== 'postgres') throw new Error(`${plan.name}: mode logical needs PostgreSQL`);
  try {
    await migrate(db, {
      dialect: plan.dialect,
      schema,
      ...(logical === undefined ? {} : { publication: logical.publication }),
    });
    const outbox = createOutbox({ dialect: plan.dialect, schema, mode });
    // A business row per transaction: after a connection error the producer asks it whether the attempt committed.
    const batches = sql.id(schema, 'batches');
    await sql`CREATE TABLE ${batches} (n integer PRIMARY KEY)`.execute(db);
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
          ...(logical === undefined ? {} : { logical }),
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
        logDirectory,
        (instanceId, code, signal) =>
          log(`${plan.name}: relay ${instanceId} exited by itself (${code ?? signal}); its log is in ${logDirectory}`),
      );
      await relay.start();
      relays.push(relay);
    }
    if (logical !== undefined) {
      // The faults are for relays that stream: produce once one does. Creating the slot waits for every transaction
      // open on the server at that moment, and a relay killed during that wait is a case of its own (the slot is
      // then created without its backfill record: test/integration/logical-slot-creation.test.ts).
      const deadline = performance.now() + 120_000;
      while ((await slotHolder(db, logical.slot)) === null) {
        if (performance.now() > deadline) throw new Error(`${plan.name}: no relay streams slot ${logical.slot} after 120 s`);
        await sleep(50);
      }
    }

    // The producer: transactions of BATCH messages at a steady rate; a key's messages in commit order.
    const expected = new Map<string, string[]>();
    const poisonIds = new Set<string>();
    let committed = 0;
    let firstCommit = 0;
    let producerRetries = 0;
    let produced = false;
    const produceMs = (plan.messages / plan.rate) * 1000;
    /**
     * One business transaction: its batch row and its messages. A connection error (a restarted or killed server)
     * leaves it unknown whether the commit happened: the same transaction is tried again, same ids, unless its batch
     * row shows it did. (Outbox ids alone cannot tell: a sent row is deleted, and the same id would be sent again.)
     */
    const commitBatch = async (n: number, messages: OutboxMessage[]) => {
      const deadline = performance.now() + 120_000;
      for (let attempt = 0; ; attempt++) {
        try {
          await db.transaction().execute(async (trx) => {
            if (attempt > 0 && (await sql`SELECT 1 FROM ${batches} WHERE n = ${n}`.execute(trx)).rows.length > 0) return;
            await sql`INSERT INTO ${batches} (n) VALUES (${n})`.execute(trx);
            await outbox.enqueue(trx, messages);
          });
          return;
        } catch (error) {
          if (error instanceof TxOutboxError || performance.now() > deadline) throw error;
          producerRetries++;
          await sleep(200);
        }
      }
    };
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
        await commitBatch(n, messages);
        if (firstCommit === 0) firstCommit = performance.now();
        for (const m of messages) if (!poisonIds.has(m.id!)) expected.set(m.key!, [...(expected.get(m.key!) ?? []), m.id!]);
        committed += messages.length;
        const due = start + ((n + BATCH) / plan.rate) * 1000;
        await sleep(Math.max(0, due - performance.now()));
      }
      produced = true;
    })();

    // The faults, spread over the producing time.
    type Fault = { at: number; run: () => Promise<void> };
    const faults: Fault[] = [];
    const spread = (count: number, offset: number) =>
      Array.from({ length: count }, (_, i) => ((i + offset) / (count + 1)) * produceMs);
    let kills = 0;
    let brokerRestarts = 0;
    let databaseKills = 0;
    let databaseRestarts = 0;
    const resumeMs: number[] = [];
    const databaseResumeMs: number[] = [];
    const databaseRestartFailures: string[] = [];
    const takeoverMs: number[] = [];
    const measuring: Promise<void>[] = [];
    /** ms until the broker has a message it did not have when called. */
    const untilProgress = async (from: number) => {
      const before = await broker.progress();
      const deadline = from + 60_000;
      while ((await broker.progress()) <= before && performance.now() < deadline) await sleep(20);
      return performance.now() - from;
    };
    /**
     * From a SIGKILL of the slot's holder: another WAL sender streams the slot, then a message arrives. When the
     * producer is done and every row was sent already, there is nothing left to publish: the slot taken is the takeover.
     */
    const measureTakeover = async (killedAt: number, killedSender: number) => {
      const deadline = killedAt + 60_000;
      for (;;) {
        const holder = await slotHolder(db, logical!.slot);
        if ((holder !== null && holder.pid !== killedSender) || performance.now() > deadline) break;
        await sleep(20);
      }
      const taken = performance.now() - killedAt;
      const before = await broker.progress();
      let idle = false;
      for (let round = 0; (await broker.progress()) <= before && performance.now() < deadline; round++) {
        if (round % 10 === 0 && produced && (await outboxCount(db, schema).catch(() => 1)) === 0) {
          idle = true;
          break;
        }
        await sleep(20);
      }
      const ms = idle ? taken : performance.now() - killedAt;
      takeoverMs.push(ms);
      log(
        `${plan.name}: ${idle ? 'slot taken (nothing left to publish)' : 'publishing again'} ${Math.round(ms)} ms after the SIGKILL of the slot's holder`,
      );
    };
    for (const at of spread(plan.kills, 1)) {
      faults.push({
        at,
        run: async () => {
          let victim = relays[Math.floor(Math.random() * relays.length)]!;
          let killedSender: number | null = null;
          if (logical !== undefined) {
            const holder = await slotHolder(db, logical.slot);
            const holding = relays.find((relay) => holder !== null && chaosApplicationOf(relay.instanceId) === holder.application);
            if (holding !== undefined && holder !== null) {
              victim = holding;
              killedSender = holder.pid;
            } else log(`${plan.name}: no relay streams the slot at this instant; killing a random one`);
          }
          const killedAt = performance.now();
          await victim.kill();
          kills++;
          if (killedSender !== null) measuring.push(measureTakeover(killedAt, killedSender));
          await sleep(plan.restartAfterMs ?? 300);
          await victim.start();
        },
      });
    }
    for (const at of spread(plan.databaseRestarts ?? 0, 0.85)) {
      faults.push({
        at,
        run: async () => {
          log(`${plan.name}: restarting PostgreSQL`);
          const failed = await restartPostgres(plan.url).then(
            () => null,
            (error: unknown) => (error as { stderr?: string }).stderr?.trim() || String(error),
          );
          if (failed !== null) {
            // A bug to report, not to wait out: the server stays in shutdown for as long as the relays run. Ending
            // them (this run's processes) lets it finish; then it is started and they are started again.
            databaseRestartFailures.push(failed);
            log(`${plan.name}: PostgreSQL did not restart (${failed}); SIGKILLing the relays so it can stop, then starting it`);
            await Promise.all(relays.map((relay) => relay.kill()));
            await startPostgres(plan.url);
            for (const relay of relays) await relay.start();
          }
          databaseRestarts++;
          const back = performance.now();
          // With the producer done and every row sent there is nothing to resume: no figure (not 60 s of waiting).
          if (produced && (await outboxCount(db, schema)) === 0) {
            log(`${plan.name}: PostgreSQL back; nothing left to publish`);
            return;
          }
          const ms = await untilProgress(back);
          databaseResumeMs.push(ms);
          log(`${plan.name}: publishing again ${Math.round(ms)} ms after PostgreSQL answered`);
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
    const faultFailures: string[] = [];
    const injecting = (async () => {
      const start = performance.now();
      for (const fault of faults) {
        await sleep(Math.max(0, start + fault.at - performance.now()));
        // A fault that fails (a query while the server is down, say) is reported; the run goes on.
        await fault.run().catch((error: unknown) => {
          faultFailures.push(String(error));
          log(`${plan.name}: a fault failed: ${String(error)}`);
        });
      }
    })();
    await Promise.all([producing, injecting]);
    await Promise.all(measuring);
    log(
      `${plan.name}: ${committed} committed (${producerRetries} transactions retried), ${kills} kills, ${brokerRestarts} broker restarts, ` +
        `${databaseKills} database kills, ${databaseRestarts} database restarts; settling`,
    );

    // Every healthy message must arrive; poison ones must end dead.
    const healthy = committed - poisonIds.size;
    const deadline = performance.now() + (plan.settleTimeoutMs ?? 120_000);
    let lastArrival = performance.now();
    let allArrived = 0;
    for (let seen = 0; performance.now() < deadline; await sleep(100)) {
      const unique = new Set((await broker.receivedIds()).filter((id) => !poisonIds.has(id))).size;
      if (unique > seen) lastArrival = performance.now();
      seen = unique;
      if (unique >= healthy && (await deadCount(db, schema)) >= poisonIds.size && (await effectCount(db, schema)) >= healthy) {
        // The logical relay deletes a row shortly after its broker ack (marks are batched): give the last ones up to
        // 15 s before the relays are stopped, so rows left behind are rows it really forgot.
        allArrived ||= performance.now();
        const left = (await outboxCount(db, schema)) - (await deadCount(db, schema));
        if (mode === 'polling' || left === 0 || performance.now() - allArrived > 15_000) break;
      }
    }
    const crashes = relays.reduce((n, relay) => n + relay.crashes, 0);
    const exits = await Promise.all(relays.map((relay) => relay.stop()));

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
    const forgotten = rows.filter((row) => row.state !== 'dead' || !poisonIds.has(row.id));
    if (forgotten.length > 0) {
      const { rows: sample } = await sql<Record<string, unknown>>`
        SELECT seq, id, msg_key, state, attempts, created_at FROM ${sql.id(schema, 'txoutbox')} ORDER BY seq LIMIT 10`.execute(db);
      log(`${plan.name}: ${forgotten.length} rows left in the outbox, the first: ${JSON.stringify(sample)}`);
    }
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
      mode,
      kills,
      takeoverMs,
      brokerRestarts,
      resumeMs,
      databaseKills,
      databaseRestarts,
      databaseResumeMs,
      databaseRestartFailures,
      faultFailures,
      crashes,
      uncleanExits: exits.filter((code) => code !== 0).length,
      logDirectory,
      healthyRate: healthy / ((lastArrival - firstCommit) / 1000),
      seconds: (performance.now() - began) / 1000,
    };
  } finally {
    await Promise.all(relays.map((relay) => relay.kill()));
    for (const relay of relays) relay.close();
    if (logical !== undefined) {
      // A slot left behind keeps WAL on the server for ever: drop it once the killed relays' WAL senders are gone.
      await dropSlotsAndPublications(db, `${schema}_`).catch((error: unknown) =>
        log(`${plan.name}: could not drop slot ${logical.slot} / publication ${logical.publication}: ${String(error)}`),
      );
    }
    for (const close of closers) await close().catch(() => undefined);
    await broker.close();
    await sql`DROP ${sql.raw(plan.dialect === 'postgres' ? 'SCHEMA' : 'DATABASE')} IF EXISTS ${sql.id(schema)} ${sql.raw(plan.dialect === 'postgres' ? 'CASCADE' : '')}`
      .execute(db)
      .catch(() => undefined);
    await db.destroy();
    rmSync(directory, { recursive: true, force: true });
  }
}

/** The WAL sender streaming `slot` now, and the application_name of the relay it streams to; null when none does. */
async function slotHolder(db: Kysely<unknown>, slot: string): Promise<{ pid: number; application: string } | null> {
  try {
    const { rows } = await sql<{ pid: number; application: string }>`
      SELECT a.pid, a.application_name AS application FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid
      WHERE s.slot_name = ${slot} AND a.backend_type = 'walsender'`.execute(db);
    return rows[0] ?? null;
  } catch {
    return null; // The server is restarting: nobody streams.
  }
}

/** Restarts the local PostgreSQL cluster (as .ci/run does) and waits until it accepts connections again. */
async function restartPostgres(url: string): Promise<void> {
  const version = readdirSync('/etc/postgresql').sort()[0];
  if (version === undefined) throw new Error('no PostgreSQL cluster under /etc/postgresql to restart');
  await run('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'restart']);
  await untilPostgresAnswers(url);
}

/** Starts the local cluster once its shutdown has finished (a start fails until then), and waits until it answers. */
async function startPostgres(url: string): Promise<void> {
  const version = readdirSync('/etc/postgresql').sort()[0]!;
  const deadline = performance.now() + 120_000;
  for (;;) {
    await run('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'start']).catch(() => undefined);
    try {
      await untilPostgresAnswers(url, 3000);
      return;
    } catch (error) {
      if (performance.now() > deadline) throw error;
    }
  }
}

async function untilPostgresAnswers(url: string, waitMs = 60_000): Promise<void> {
  const deadline = performance.now() + waitMs;
  for (;;) {
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      return;
    } catch (error) {
      if (performance.now() > deadline) throw new Error('PostgreSQL did not accept connections after its restart', { cause: error });
      await sleep(100);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

async function outboxRows(db: Kysely<unknown>, schema: string): Promise<{ id: string; state: string }[]> {
  const { rows } = await sql<{ id: string | Buffer; state: string }>`SELECT id, state FROM ${sql.id(schema, 'txoutbox')}`.execute(
    db,
  );
  return rows.map((row) => ({ id: Buffer.isBuffer(row.id) ? row.id.toString('utf8') : row.id, state: row.state }));
}

async function outboxCount(db: Kysely<unknown>, schema: string): Promise<number> {
  const { rows } = await sql<{ n: number | string }>`SELECT count(*) AS n FROM ${sql.id(schema, 'txoutbox')}`.execute(db);
  return Number(rows[0]!.n);
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
