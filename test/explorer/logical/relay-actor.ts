import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from '../../../src/brokers/broker.js';
import { retryable } from '../../../src/brokers/outcomes.js';
import { createRelay, type LogicalRelay } from '../../../src/index.js';
import type { LogicalWorld } from './world.js';

/** How long a crashed incarnation's stop may take at the end of a schedule. */
const BURY_MS = 1000;

/** A publish the relay asked for and the scheduler has not answered yet. */
export interface Call {
  messages: readonly OutgoingMessage[];
  answer(outcomes: PublishOutcome[]): void;
}

/** The broker of one relay incarnation: every publish waits for the scheduler's answer. */
class GatedBroker implements Broker {
  readonly name = 'explorer';
  readonly calls: Call[] = [];
  /** A crashed incarnation's broker: its calls are never answered (the process is gone). */
  abandoned = false;

  constructor(private readonly onCall: () => void) {}

  publish(messages: readonly OutgoingMessage[], { signal }: PublishContext): Promise<PublishOutcome[]> {
    return new Promise((resolve) => {
      const call: Call = {
        messages,
        answer: (outcomes) => {
          const at = this.calls.indexOf(call);
          if (at >= 0) this.calls.splice(at, 1);
          resolve(outcomes);
        },
      };
      if (this.abandoned) return;
      this.calls.push(call);
      // Aborted by the relay (it stopped, or its tenure of the slot ended): the broker never took the batch.
      signal.addEventListener('abort', () => call.answer(messages.map(() => retryable('explorer: aborted'))), { once: true });
      this.onCall();
    });
  }
}

/**
 * One relay of a logical schedule, incarnation after incarnation: a real LogicalRelay on its own pool, streaming
 * the world's slot, publishing through a broker the scheduler answers. A crash abandons the incarnation where it
 * stands (its pool is destroyed, its WAL sender terminated, its publishes never answered); a cut ends only its
 * replication connection, as a network cut would, and the relay takes the slot again by itself.
 */
export class LogicalRelayActor {
  private relay: LogicalRelay | null = null;
  private db: Kysely<any> | null = null;
  private broker: GatedBroker | null = null;
  private incarnation = 0;
  private readonly abandoned: { relay: LogicalRelay; db: Kysely<any> }[] = [];
  /** When this actor last saw something happen (a publish asked for): the explorer waits for quiet. */
  lastActivity = Date.now();

  constructor(
    readonly name: string,
    private readonly world: LogicalWorld,
    private readonly settings: { maxAttempts: number; batchSize: number },
  ) {}

  get running(): boolean {
    return this.relay !== null;
  }

  get calls(): Call[] {
    return this.broker?.calls ?? [];
  }

  get instanceId(): string {
    return `${this.name}.${this.incarnation}`;
  }

  /** Whether this incarnation streams the slot now. */
  get owned(): boolean {
    return this.relay?.status().partitions.every((partition) => partition.owned) ?? false;
  }

  async start(): Promise<void> {
    this.incarnation++;
    this.db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: this.world.localUrl, max: 4 }) }) });
    this.broker = new GatedBroker(() => (this.lastActivity = Date.now()));
    this.relay = createRelay({
      db: this.db,
      dialect: 'postgres',
      schema: this.world.schema,
      broker: this.broker,
      mode: 'logical',
      slot: this.world.slot,
      publication: this.world.publication,
      instanceId: this.instanceId,
      maxAttempts: this.settings.maxAttempts,
      batchSize: this.settings.batchSize,
      concurrency: 2,
      backoff: { initialMs: 1, maxMs: 5 },
      // No deadline of the relay's own ends a publish: only the scheduler's answers (and stops, crashes, cuts).
      publishTimeoutMs: 600_000,
      leaseMs: 1_200_000,
      standbyRetryMs: 50,
    });
    this.relay.on('error', () => undefined);
    await this.relay.start();
  }

  /** Looks for due rows in the table now (time passed). */
  kick(): void {
    this.relay?.kick();
  }

  /** A clean stop, as SIGTERM gives one: publishes in flight get a moment, then are aborted. */
  async stop(drainMs = 50): Promise<void> {
    const relay = this.relay;
    const db = this.db;
    this.relay = null;
    this.db = null;
    this.broker = null;
    await relay?.stop({ drainMs });
    await db?.destroy();
  }

  /** The process dies: nothing more of this incarnation reaches the database or the broker. */
  async crash(): Promise<void> {
    if (this.relay === null || this.db === null || this.broker === null) return;
    this.broker.abandoned = true;
    this.abandoned.push({ relay: this.relay, db: this.db });
    const db = this.db;
    this.relay = null;
    this.db = null;
    this.broker = null;
    await db.destroy().catch(() => undefined);
    await this.terminateSender();
  }

  /** The replication connection is cut (the relay goes on, and takes the slot again). */
  async cut(): Promise<void> {
    await this.terminateSender();
  }

  /**
   * Ends what crashed incarnations left running: their hold loops, which reach no database any more. A stop that
   * has not returned within a few seconds is left behind (seen: a stream that had just connected as the pool went),
   * after its WAL sender is ended, so that nothing of it holds the slot into the next schedule.
   */
  async bury(): Promise<void> {
    for (const { relay } of this.abandoned.splice(0)) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        relay.stop({ drainMs: 0 }).catch(() => undefined),
        new Promise((resolve) => (timer = setTimeout(resolve, BURY_MS))),
      ]);
      clearTimeout(timer);
    }
    await this.terminateSender(`txoutbox-relay ${this.name}.%`);
  }

  /** Ends the WAL senders of this incarnation (or of those whose application_name matches `pattern`). */
  private async terminateSender(pattern = `txoutbox-relay ${this.instanceId}`): Promise<void> {
    await sql`
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE backend_type = 'walsender' AND application_name LIKE ${pattern}`.execute(this.world.admin);
  }
}
