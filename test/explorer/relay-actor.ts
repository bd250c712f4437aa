import type { Broker, OutgoingMessage, PublishOutcome } from '../../src/brokers/broker.js';
import type { ClaimedMessage, RelayStore } from '../../src/dialects/dialect.js';
import { dialectFor } from '../../src/dialects/index.js';
import { createRelay, type Relay } from '../../src/index.js';
import type { World } from './world.js';

/** Where a relay stands between two moves: about to call its store, or waiting for the broker's answer. */
export type Gate =
  | { kind: 'store'; op: string; release: () => void }
  | { kind: 'publish'; messages: readonly OutgoingMessage[]; answer: (outcomes: PublishOutcome[]) => void };

const label = (m: ClaimedMessage) =>
  `${m.id}(${m.key ?? '-'}${m.takenOverFrom === null ? '' : ', taken over'}, try ${m.attempts})`;

/**
 * One relay driven move by move: a real Relay (runOnce: claim, triage, publish, settle, the circuit breaker)
 * over the dialect's real relay store, with every store call and every publish a gate the scheduler opens. A
 * crash abandons the incarnation where it stands (its gates never open again: it is gone) and starts a new one,
 * with a fresh store, as a restarted process would be.
 */
export class RelayActor {
  gate: Gate | null = null;
  private running: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private incarnation = 0;
  private relay!: Relay;

  constructor(
    readonly name: string,
    private readonly world: World,
    private readonly settings: { maxAttempts: number; batchSize: number },
    private readonly log: (line: string) => void,
    private readonly failures: string[],
  ) {
    this.start();
  }

  get idle(): boolean {
    return this.running === null;
  }

  /** The lease owners of all this actor's incarnations start with this. */
  get ownerPrefix(): string {
    return `${this.name}.`;
  }

  /** Starts a run (idle) or lets the relay past its store gate, and returns once it stands still again. */
  async go(): Promise<void> {
    if (this.running === null) {
      const started = this.relay.runOnce().then(
        (result) => void (result.claimed === 0 && this.log(`${this.name} run: nothing claimed`)),
        (error: unknown) =>
          void this.failures.push(`${this.name} failed: ${error instanceof Error ? error.message : String(error)}`),
      );
      this.running = started.finally(() => {
        if (this.running === tracked) this.running = null;
        this.wake?.();
      });
      const tracked = this.running;
      return this.still();
    }
    const gate = this.gate;
    if (gate?.kind !== 'store') throw new Error(`${this.name} is not at a store gate`);
    this.gate = null;
    const still = this.still();
    gate.release();
    return still;
  }

  /** Answers the publish the relay waits on. */
  async answer(outcome: PublishOutcome): Promise<readonly OutgoingMessage[]> {
    const gate = this.gate;
    if (gate?.kind !== 'publish') throw new Error(`${this.name} is not waiting for the broker`);
    this.gate = null;
    const still = this.still();
    gate.answer(gate.messages.map(() => outcome));
    await still;
    return gate.messages;
  }

  /** The process dies where it stands; a new one starts. */
  crash(): void {
    this.gate = null;
    this.running = null;
    this.start();
  }

  private start(): void {
    const incarnation = ++this.incarnation;
    const alive = () => this.incarnation === incarnation;
    const instanceId = `${this.name}.${incarnation}`;
    const store = this.gated(dialectFor(this.world.dialect).relayStore(this.world.db, this.world.names), alive);
    const broker: Broker = {
      name: 'explorer',
      publish: (messages) =>
        new Promise((answer) => {
          if (alive()) this.arrive({ kind: 'publish', messages, answer });
        }),
    };
    this.relay = createRelay({
      db: this.world.db,
      dialect: this.world.dialect,
      schema: this.world.schema,
      broker,
      store,
      instanceId,
      // Leases and deadlines never run out by themselves: the scheduler expires leases as a move.
      leaseMs: 600_000,
      publishTimeoutMs: 300_000,
      maxAttempts: this.settings.maxAttempts,
      batchSize: this.settings.batchSize,
      backoff: { initialMs: 0, maxMs: 0, factor: 1 },
      random: () => 0,
      // On the explorer's time (see virtual-time.ts): two moves.
      brokerProbeIntervalMs: 10,
    });
  }

  private arrive(gate: Gate): void {
    this.gate = gate;
    this.wake?.();
  }

  /** Resolves once the relay is at a gate or its run has ended. */
  private still(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.gate !== null || this.running === null) {
          this.wake = null;
          resolve();
        }
      };
      this.wake = check;
      check();
    });
  }

  /** The store with a gate before every call that touches rows; a dead incarnation's calls never return. */
  private gated(store: RelayStore, alive: () => boolean): RelayStore {
    const pass = <T>(op: string, touches: boolean, call: () => Promise<T>, show: (result: T) => string): Promise<T> => {
      if (!alive()) return new Promise(() => {});
      if (!touches && op !== 'claim') return call();
      if (!touches) return call().then((result) => (alive() && this.log(`${this.name} ${op}${show(result)}`), result));
      return new Promise<void>((release) => this.arrive({ kind: 'store', op, release })).then(async () => {
        const result = await call();
        if (alive()) this.log(`${this.name} ${op}${show(result)}`);
        return result;
      });
    };
    const ids = (messages: readonly ClaimedMessage[]) => messages.map((m) => m.id).join(', ');
    return {
      claim: (limits, token, leaseMs) =>
        // A run starts with its claim: the move that starts it makes the claim too.
        pass(
          'claim',
          false,
          () => store.claim(limits, token, leaseMs),
          (got) => ` (up to ${limits.count}) -> [${got.map(label).join(', ')}]`,
        ),
      complete: (messages, token, retain) =>
        pass(
          'complete',
          messages.length > 0,
          () => store.complete(messages, token, retain),
          (done) => ` [${ids(messages)}] -> sent [${ids(done.sent)}]`,
        ),
      retry: (plans, token) =>
        pass(
          'retry',
          plans.length > 0,
          () => store.retry(plans, token),
          () => ` [${ids(plans.map((p) => p.message))}]`,
        ),
      bury: (letters, token, releaseKey) =>
        pass(
          'bury',
          letters.length > 0,
          () => store.bury(letters, token, releaseKey),
          () => ` [${ids(letters.map((l) => l.message))}]`,
        ),
      release: (messages, token) =>
        pass(
          'release',
          messages.length > 0,
          () => store.release(messages, token),
          () => ` [${ids(messages)}]`,
        ),
      handOver: (message, from, to, leaseMs) =>
        pass(
          'handOver',
          true,
          () => store.handOver(message, from, to, leaseMs),
          (ok) => ` ${message.id} -> ${ok ? 'alone' : 'lost'}`,
        ),
      renew: (messages, token, leaseMs) =>
        pass(
          'renew',
          messages.length > 0,
          () => store.renew(messages, token, leaseMs),
          () => ` [${ids(messages)}]`,
        ),
      cleanup: (retainMs, limit) => store.cleanup(retainMs, limit),
    };
  }
}
