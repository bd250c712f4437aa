import type { PublishOutcome } from '../brokers/broker.js';

/** An outcome that says the broker could not be reached, rather than anything about the message. */
export const isUnreachable = (outcome: PublishOutcome): boolean => outcome.status === 'retryable' && outcome.unreachable === true;

/**
 * Pauses a relay's claiming while its broker is unreachable, and finds out when it is back.
 *
 * closed: claim as usual. A batch with an outcome marked `unreachable` opens the breaker: nobody claims, so no
 * message spends its retry budget or its backoff on an outage (the relay gives those messages back uncounted).
 * Every `probeIntervalMs` one worker claims a single message as a probe: if the broker takes it (or answers at all,
 * even with a refusal of that message) the breaker closes and every worker claims at full speed again at once;
 * if it is still unreachable the breaker stays open until the next probe. A probe that finds nothing to send learns
 * nothing: the breaker stays open and the next probe comes an interval later. (Closing then would let every worker
 * claim at full speed into a broker still down, whenever the probe ran before the last batch's leases were given back.)
 */
export class CircuitBreaker {
  private state: 'closed' | 'open' | 'probing' = 'closed';
  /** While open: when the next probe may start. */
  private probeAt = 0;
  private readonly sleepers = new Set<() => void>();

  constructor(
    readonly probeIntervalMs: number,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  get isOpen(): boolean {
    return this.state !== 'closed';
  }

  /**
   * How many messages a worker may claim now: `batchSize` when closed, 1 for the one worker whose turn it is to
   * probe, 0 when it must wait (see `wait`).
   */
  allowance(batchSize: number): number {
    if (this.state === 'closed') return batchSize;
    if (this.state === 'open' && this.clock() >= this.probeAt) {
      this.state = 'probing';
      return 1;
    }
    return 0;
  }

  /** Resolves when the allowance may have changed: the next probe is due, the breaker closed, or `wakeAll`. */
  wait(): Promise<void> {
    const delay = this.state === 'open' ? Math.max(1, this.probeAt - this.clock()) : this.probeIntervalMs;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, delay);
      this.sleepers.add(done);
    });
  }

  /**
   * A batch's outcomes: any unreachable one opens (or keeps open) the breaker; any other answer closes it. No
   * outcome at all (the probe's message was buried unpublished, its attempts spent by lost leases) is a probe that
   * found nothing to send: the next one comes an interval later, or the breaker would stay probing for ever.
   */
  record(outcomes: readonly PublishOutcome[]): void {
    if (outcomes.some(isUnreachable)) {
      this.state = 'open';
      this.probeAt = this.clock() + this.probeIntervalMs;
      return;
    }
    if (outcomes.length > 0) this.close();
    else this.claimedNothing();
  }

  /** A claim found nothing: if it was the probe, the broker is still unknown; the next probe comes an interval later. */
  claimedNothing(): void {
    if (this.state !== 'probing') return;
    this.state = 'open';
    this.probeAt = this.clock() + this.probeIntervalMs;
  }

  /** Resumes every waiting worker (the relay is stopping). */
  wakeAll(): void {
    for (const resume of [...this.sleepers]) resume();
  }

  private close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.wakeAll();
  }
}
