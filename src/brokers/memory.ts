import { onAbort } from './abort.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import { OK, permanent, retryable, unreachable } from './outcomes.js';

/** How a matching publish should go wrong. */
export type InjectedFailure =
  | { kind: 'retryable'; error?: string }
  | { kind: 'permanent'; error?: string }
  /** As if the broker were down: a retryable outcome marked `unreachable`. */
  | { kind: 'unreachable'; error?: string }
  /** Never answer (until the relay's deadline aborts it, or `releaseHung()` is called). */
  | { kind: 'hang' }
  /** Answer ok, but only after this long. */
  | { kind: 'slow'; ms: number };

interface FailureRule {
  matches: (message: OutgoingMessage) => boolean;
  failure: InjectedFailure;
  /** How many more publishes it applies to; Infinity for "forever". */
  remaining: number;
}

/**
 * A broker in memory, for tests and demos: it keeps every accepted message in order and can be told to fail.
 * `accepted` is what a consumer would have received; `attempts` counts every publish it was asked for.
 */
export class MemoryBroker implements Broker {
  readonly name = 'memory';
  readonly accepted: OutgoingMessage[] = [];
  attempts = 0;
  private readonly rules: FailureRule[] = [];
  private readonly hung = new Set<() => void>();

  /** Applies `failure` to the next `times` publishes of messages that match (all messages when no filter). */
  fail(failure: InjectedFailure, options: { times?: number; where?: (message: OutgoingMessage) => boolean } = {}): this {
    this.rules.push({ matches: options.where ?? (() => true), failure, remaining: options.times ?? Infinity });
    return this;
  }

  /** Removes every injected failure. */
  heal(): this {
    this.rules.length = 0;
    return this;
  }

  /** Lets every hanging publish answer ok now. */
  releaseHung(): void {
    for (const release of this.hung) release();
    this.hung.clear();
  }

  /** Accepted messages of a topic (or all), in the order the broker accepted them. */
  received(topic?: string): OutgoingMessage[] {
    return topic === undefined ? [...this.accepted] : this.accepted.filter((m) => m.topic === topic);
  }

  async publish(messages: readonly OutgoingMessage[], context: PublishContext): Promise<PublishOutcome[]> {
    return Promise.all(messages.map((message) => this.publishOne(message, context)));
  }

  private async publishOne(message: OutgoingMessage, { signal }: PublishContext): Promise<PublishOutcome> {
    this.attempts++;
    const rule = this.rules.find((r) => r.remaining > 0 && r.matches(message));
    if (rule !== undefined) {
      rule.remaining--;
      const { failure } = rule;
      if (failure.kind === 'retryable') return retryable(failure.error ?? 'injected retryable failure');
      if (failure.kind === 'permanent') return permanent(failure.error ?? 'injected permanent failure');
      if (failure.kind === 'unreachable') return unreachable(failure.error ?? 'injected outage: the broker is unreachable');
      const answered = await this.wait(failure.kind === 'slow' ? failure.ms : null, signal);
      if (!answered) return retryable('aborted before the broker answered');
    }
    this.accepted.push({ ...message, headers: { ...message.headers } });
    return OK;
  }

  /** Waits `ms` (or until released, when null); false when the caller aborted first. */
  private wait(ms: number | null, signal: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve(false);
      const done = (answered: boolean) => {
        clearTimeout(timer);
        stopListening();
        this.hung.delete(release);
        resolve(answered);
      };
      const release = () => done(true);
      const timer = ms === null ? undefined : setTimeout(release, ms);
      if (ms === null) this.hung.add(release);
      const stopListening = onAbort(signal, () => done(false));
    });
  }
}
