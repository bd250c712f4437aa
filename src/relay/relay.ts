import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { OutgoingMessage, PublishOutcome } from '../brokers/broker.js';
import type { ClaimedMessage, ClaimLimits, DeadLetter, RelayStore, RetryPlan } from '../dialects/dialect.js';
import { tableNames } from '../dialects/identifiers.js';
import { dialectFor } from '../dialects/index.js';
import { backoffDelay } from './backoff.js';
import { SentCleanup } from './sent-cleanup.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { resolveRelayOptions, type RelayOptions, type ResolvedRelayOptions } from './options.js';
import { listenForWakeups } from './pg-listener.js';
import { publishWithDeadline } from './publish-with-deadline.js';
import { LogicalRelay } from './logical/logical-relay.js';
import { setLongInterval, setLongTimeout, type LongTimer } from '../timers.js';
import { Waker } from './waker.js';
import type { RelayEvents } from './events.js';

export type { DeadMessage, RelayEvents, RetryingMessage } from './events.js';

export interface CycleResult {
  claimed: number;
  published: number;
  retried: number;
  dead: number;
}

const NOTHING: CycleResult = { claimed: 0, published: 0, retried: 0, dead: 0 };
const add = (a: CycleResult, b: CycleResult): CycleResult => ({
  claimed: a.claimed + b.claimed,
  published: a.published + b.published,
  retried: a.retried + b.retried,
  dead: a.dead + b.dead,
});

/**
 * Marks the claim token of a message published on its own after a lost lease. If that lease is lost too (the
 * process died again), the message is the one that kills the relay: it goes last, and dead after its budget.
 */
const ALONE = '#alone';
/** How long stop() waits past drainMs for workers stuck in a database call before it returns anyway. */
const STOP_GRACE_MS = 1000;

/** Messages leased under one claim token. */
interface Claim {
  messages: ClaimedMessage[];
  token: string;
  /** performance.now() before the claim was sent: its lease cannot have started earlier. */
  sentAt: number;
}

/**
 * Moves committed messages from the outbox table to the broker: claim due heads with a lease, publish, and only
 * on the broker's persisted acknowledgement delete them (which frees each key's next message). Failures are
 * retried with backoff and dead-lettered after the budget. Any number of relays may run on one table.
 */
export class Relay extends EventEmitter<RelayEvents> {
  readonly instanceId: string;
  private readonly options: ResolvedRelayOptions;
  private readonly store: RelayStore;
  private readonly waker = new Waker();
  private readonly breaker: CircuitBreaker;
  private readonly inFlight = new Set<AbortController>();
  private workers: Promise<void>[] = [];
  private running = false;
  private stopping = false;
  private claims = 0;
  /** Makes this relay's claim tokens unique even when two relays are given the same instanceId. */
  private readonly nonce = randomBytes(4).toString('hex');
  private readonly sentCleanup: SentCleanup;
  private listener: { close(): Promise<void> } | null = null;
  private cleanupTimer: LongTimer | null = null;

  constructor(options: RelayOptions<unknown>) {
    super();
    this.options = resolveRelayOptions(options);
    const names = tableNames(this.options.table, this.options.schema);
    this.store =
      this.options.store ??
      dialectFor(this.options.dialect).relayStore(this.options.db, names, { asyncCommit: this.options.asyncCommit });
    this.instanceId = this.options.instanceId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.breaker = new CircuitBreaker(this.options.brokerProbeIntervalMs);
    this.sentCleanup = new SentCleanup(this.store, this.options, (error) => this.report(error));
  }

  /** Starts the workers, the wake-up listener (PostgreSQL with `listen`) and the cleanup. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.stopping = false;
    const { listen, dialect } = this.options;
    if (dialectFor(dialect).commitWakeups && listen !== undefined) {
      const names = tableNames(this.options.table, this.options.schema);
      this.listener = listenForWakeups(
        listen,
        names,
        () => this.waker.wake(),
        (error) => this.report(error),
      );
    }
    for (let index = 0; index < this.options.concurrency; index++) this.workers.push(this.work(index === 0));
    // Long-armed: cleanupIntervalMs is the user's, and an overflowed interval would clean up every millisecond.
    this.cleanupTimer = setLongInterval(() => void this.cleanup(), this.options.cleanupIntervalMs).unref();
  }

  /**
   * Stops claiming, lets batches in flight finish for up to `drainMs`, then aborts the rest and gives their
   * leases back (without counting the attempt), so another relay can publish them at once.
   */
  async stop({ drainMs = 10_000 }: { drainMs?: number } = {}): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stopping = true;
    this.cleanupTimer?.clear();
    this.waker.wakeAll();
    this.breaker.wakeAll();
    const listener = this.listener;
    this.listener = null;
    await listener?.close();
    const workers = Promise.all(this.workers);
    let timer: LongTimer | undefined;
    const drained = await Promise.race([
      workers.then(() => true),
      new Promise<boolean>((resolve) => (timer = setLongTimeout(() => resolve(false), drainMs))),
    ]);
    timer?.clear();
    if (!drained) {
      for (const controller of this.inFlight) controller.abort(new Error('the relay is stopping'));
      // Aborted publishes settle at once; a worker still inside a database call after the grace is left to finish
      // on its own (its leases run out if it never does), so stop() keeps its promise whatever the database does.
      const finished = await Promise.race([workers.then(() => true), sleep(STOP_GRACE_MS).then(() => false)]);
      if (!finished)
        this.report(
          new Error(`stop: workers were still in a database call ${drainMs + STOP_GRACE_MS} ms after stop(); returning anyway`),
        );
    }
    this.workers = [];
  }

  /** Wakes idle workers now: call it right after a commit when the relay runs in the producing process. */
  kick(): void {
    this.waker.wake();
  }

  /** Claims and handles one batch; for tests and cron-style use without `start()`. */
  async runOnce(): Promise<CycleResult> {
    const allowance = this.breaker.allowance(this.options.batchSize);
    if (allowance === 0) return NOTHING; // The broker is unreachable and the next probe is not due yet.
    const token = this.nextToken();
    const claimed = await this.store.claim(this.limits(allowance), token, this.options.leaseMs);
    if (claimed.length === 0) this.breaker.claimedNothing();
    return claimed.length === 0 ? NOTHING : this.handle(claimed, token);
  }

  /** Deletes sent rows past the retention window, in small batches, off the publish path. */
  cleanup(): Promise<number> {
    return this.sentCleanup.run();
  }

  /**
   * One worker. It keeps one batch at the broker at a time and overlaps the database around it: while a full batch
   * publishes, the next one is already being claimed, and a published batch is marked while the next publishes.
   * Order per key is safe: a claim returns only heads, and a key's next message becomes a head only once its
   * predecessor's completion commits. Only the first worker polls on a timer when idle; the others sleep until
   * woken, so an idle relay costs one query per poll interval. The poll is adaptive: short right after work, then
   * doubling up to pollIntervalMs (producers do not NOTIFY by default, so LISTEN alone cannot keep latency low).
   */
  private async work(polls: boolean): Promise<void> {
    let idleMs = this.options.minPollIntervalMs;
    let prefetched: Promise<Claim> | null = null;
    let settling: Promise<unknown> = Promise.resolve();
    while (this.running) {
      const ahead = prefetched !== null;
      // While the broker is unreachable nobody claims, but one worker now and then probes with one message.
      const allowance = ahead ? this.options.batchSize : this.breaker.allowance(this.options.batchSize);
      if (allowance === 0) {
        await this.breaker.wait();
        continue;
      }
      // allowance() has just made this worker the probe.
      const probe = !ahead && this.breaker.isOpen;
      const { messages, token, sentAt } = await (prefetched ?? this.claim(allowance));
      if (messages.length === 0) this.breaker.claimedNothing();
      prefetched = null;
      if (!this.running) {
        await this.giveBack(messages, token);
        break;
      }
      // The breaker opened while this batch was claimed (or waited, claimed ahead): the broker is unreachable, so
      // the batch goes back uncounted rather than into the outage; the probe alone finds out when it is back.
      if (!probe && this.breaker.isOpen && messages.length > 0) {
        await this.giveBack(messages, token);
        continue;
      }
      // A batch claimed ahead waited for the publish before it. If its lease could run out before its own publish
      // deadline, another relay could take it over while it is still being sent: give it back and claim afresh.
      if (ahead && messages.length > 0 && performance.now() - sentAt + this.options.publishTimeoutMs >= this.options.leaseMs) {
        await this.giveBack(messages, token);
        continue;
      }
      if (messages.length > 0) {
        const full = messages.length === this.options.batchSize;
        // A full batch says more is waiting: claim the next one now, and wake a sleeping worker to help.
        if (full) {
          prefetched = this.claim();
          this.waker.wake();
        }
        const { batch, settle } = await this.triage(messages, token);
        const outcomes = await this.publish(batch.map(toOutgoing));
        await settling; // One completion at a time per worker keeps memory and connections bounded.
        settling = this.settle(batch, outcomes, token)
          .then(settle)
          .catch((error: unknown) => this.report(error));
        idleMs = this.options.minPollIntervalMs;
        continue;
      }
      await settling;
      // Checked again after the await: a worker that went to sleep after stop() woke everyone would sleep forever.
      if (!this.running) break;
      await this.waker.sleep(polls ? idleMs : undefined);
      idleMs = Math.min(idleMs * 2, this.options.pollIntervalMs);
    }
    await settling;
    if (prefetched !== null) {
      const { messages, token } = await prefetched;
      await this.giveBack(messages, token);
    }
  }

  /** A claim that reports a failing database and yields nothing, so the worker simply tries again later. */
  private async claim(limit = this.options.batchSize): Promise<Claim> {
    const token = this.nextToken();
    const sentAt = performance.now();
    try {
      return { messages: await this.store.claim(this.limits(limit), token, this.options.leaseMs), token, sentAt };
    } catch (error) {
      this.report(error);
      return { messages: [], token, sentAt };
    }
  }

  /** Returns the leases of claimed but unpublished messages (the relay is stopping), without counting the attempt. */
  private async giveBack(messages: ClaimedMessage[], token: string): Promise<void> {
    if (messages.length === 0) return;
    await this.store.release(messages, token).catch((error: unknown) => this.report(error));
  }

  private async handle(claimed: ClaimedMessage[], token: string): Promise<CycleResult> {
    const { batch, settle } = await this.triage(claimed, token);
    const result = await this.settle(batch, await this.publish(batch.map(toOutgoing)), token);
    return add(result, await settle());
  }

  private limits(count = this.options.batchSize): ClaimLimits {
    return { count, bytes: this.options.maxBatchBytes };
  }

  /**
   * Sorts a claim by what happened to its messages before. A message whose previous lease ran out unsettled was
   * being published when its relay died or stalled, and may be what kills the relay: it is published on its own,
   * under a token of its own, so a crash takes only it down and marks it; one marked so goes after the others, and
   * is dead once this claim is its maxAttempts-th (any message is, past maxAttempts claims) without another try. The rest go out as one batch. Returns the
   * batch and a step, run after the batch is settled, that deals with the others one at a time.
   */
  private async triage(claimed: ClaimedMessage[], token: string) {
    const { maxAttempts } = this.options;
    const culprit = (m: ClaimedMessage) => m.takenOverFrom?.endsWith(ALONE) === true;
    // This claim is an attempt too; a proven culprit would only kill the relay once more with its last one.
    const isExhausted = (m: ClaimedMessage) => m.attempts > maxAttempts || (culprit(m) && m.attempts >= maxAttempts);
    const exhausted = claimed.filter(isExhausted);
    const suspects = claimed.filter((m) => !isExhausted(m) && m.takenOverFrom !== null);
    const batch = claimed.filter((m) => !isExhausted(m) && m.takenOverFrom === null);
    suspects.sort((a, b) => Number(culprit(a)) - Number(culprit(b)));
    const settle = async (): Promise<CycleResult> => {
      let result = NOTHING;
      if (exhausted.length > 0) {
        const dead = exhausted.map((message) => ({
          message,
          error: `gave up after ${message.attempts} attempts: the relay publishing it lost its lease (it crashed or stalled mid-publish)`,
        }));
        await this.bury(dead, token);
        result = add(result, { ...NOTHING, claimed: dead.length, dead: dead.length });
      }
      // One at a time can outlast the claim's lease: the ones still to go have theirs renewed as it goes, or this
      // relay's other workers would take them over (and count another attempt) while they wait their turn.
      let renewedAt = Number.NEGATIVE_INFINITY; // The claim may be old already (claimed ahead, its batch published first).
      for (const [index, message] of suspects.entries()) {
        if (this.stopping) {
          await this.giveBack([message], token);
          continue;
        }
        if (performance.now() - renewedAt > this.options.leaseMs / 3) {
          await this.store.renew(suspects.slice(index), token, this.options.leaseMs);
          renewedAt = performance.now();
        }
        const alone = `${this.nextToken()}${ALONE}`;
        if (!(await this.store.handOver(message, token, alone, this.options.leaseMs))) continue;
        result = add(result, await this.settle([message], await this.publish([toOutgoing(message)]), alone));
      }
      return result;
    };
    return { batch, settle };
  }

  /** Records the outcomes: completes what the broker acknowledged, schedules retries, buries, or gives back. */
  private async settle(claimed: ClaimedMessage[], outcomes: PublishOutcome[], token: string): Promise<CycleResult> {
    const { broker, maxAttempts, backoff, random } = this.options;
    this.breaker.record(outcomes);

    const ok: ClaimedMessage[] = [];
    const retries: RetryPlan[] = [];
    const dead: DeadLetter[] = [];
    const abandoned: ClaimedMessage[] = [];
    claimed.forEach((message, index) => {
      const outcome = outcomes[index]!;
      if (outcome.status === 'ok') ok.push(message);
      // Given back uncounted: the relay is stopping, or the broker is unreachable (its state, not the message's fault).
      else if (outcome.status === 'retryable' && (this.stopping || outcome.unreachable === true)) abandoned.push(message);
      else if (outcome.status === 'permanent') dead.push({ message, error: `${broker.name}: ${outcome.error}` });
      else if (message.attempts >= maxAttempts) {
        dead.push({ message, error: `${broker.name}: gave up after ${message.attempts} attempts: ${outcome.error}` });
      } else {
        retries.push({
          message,
          error: `${broker.name}: ${outcome.error}`,
          delayMs: backoffDelay(message.attempts, backoff, random),
        });
      }
    });

    const { sent, promoted } = await this.store.complete(ok, token, this.options.retainSentMs > 0);
    // A key whose head was just sent has its next message ready now: claim it without waiting for a poll.
    if (promoted > 0) this.waker.wake();
    if (sent.length > 0) this.emit('published', sent.map(toOutgoing));
    await this.store.retry(retries, token);
    if (retries.length > 0) {
      this.emit(
        'retrying',
        retries.map(({ message, error, delayMs }) => ({ message: toOutgoing(message), error, delayMs })),
      );
    }
    await this.bury(dead, token);
    await this.store.release(abandoned, token);
    return { claimed: claimed.length, published: sent.length, retried: retries.length, dead: dead.length };
  }

  private async bury(dead: DeadLetter[], token: string): Promise<void> {
    if (dead.length === 0) return;
    const promoted = await this.store.bury(dead, token, this.options.deadLetterPolicy === 'skip');
    if (promoted > 0) this.waker.wake();
    this.emit(
      'dead',
      dead.map(({ message, error }) => ({ message: toOutgoing(message), error })),
    );
  }

  private publish(messages: OutgoingMessage[]): Promise<PublishOutcome[]> {
    return publishWithDeadline(this.options.broker, messages, this.options.publishTimeoutMs, this.inFlight);
  }

  private nextToken(): string {
    return `${this.instanceId}:${this.nonce}:${++this.claims}`;
  }

  private report(error: unknown): void {
    const wrapped = error instanceof Error ? error : new Error(String(error));
    if (this.listenerCount('error') > 0) this.emit('error', wrapped);
    else console.error(`[txoutbox relay ${this.instanceId}]`, wrapped);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function toOutgoing(message: ClaimedMessage): OutgoingMessage {
  return {
    id: message.id,
    topic: message.topic,
    key: message.key,
    payload: message.payload,
    contentType: message.contentType,
    headers: message.headers,
    attempt: message.attempts,
    createdAt: message.createdAt,
  };
}

/**
 * A relay in mode 'logical': it streams committed outbox inserts from a PostgreSQL replication slot (needs
 * `wal_level = logical`; `start()` rejects with `LogicalDecodingUnavailableError` otherwise).
 *
 * @example
 * ```ts
 * import { createRelay, migrate } from 'txoutbox';
 *
 * await migrate(db, { dialect: 'postgres', publication: 'txoutbox_publication' });
 * const relay = createRelay({ db, dialect: 'postgres', broker, mode: 'logical', publication: 'txoutbox_publication' });
 * await relay.start(); // creates the slot txoutbox_slot on first start; standby relays take over when it goes
 * ```
 */
export function createRelay<DB>(options: RelayOptions<DB> & { mode: 'logical' }): LogicalRelay;
/**
 * A relay: it claims committed messages from the outbox table (polling, the default; or, with `mode: 'logical'`,
 * streams them from a PostgreSQL replication slot), publishes them to `broker`, and deletes each one only after the
 * broker's persisted acknowledgement. Run as many as you like on one table. Invalid options throw a `ConfigError`.
 *
 * @example
 * ```ts
 * import { createRelay } from 'txoutbox';
 * import { createRabbitMqBroker } from 'txoutbox/rabbitmq';
 *
 * const relay = createRelay({ db, dialect: 'postgres', broker: createRabbitMqBroker({ url: 'amqp://localhost' }) });
 * relay.on('dead', (messages) => console.error('dead-lettered', messages));
 * relay.start();
 * process.once('SIGTERM', () => void relay.stop({ drainMs: 10_000 }));
 * ```
 */
export function createRelay<DB>(options: RelayOptions<DB>): Relay;
export function createRelay<DB>(options: RelayOptions<DB>): Relay | LogicalRelay {
  return options.mode === 'logical'
    ? new LogicalRelay(options as RelayOptions<unknown>)
    : new Relay(options as RelayOptions<unknown>);
}
