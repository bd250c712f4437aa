import type { Broker, OutgoingMessage, PublishOutcome } from '../brokers/broker.js';
import { setLongTimeout, type LongTimer } from '../timers.js';

/**
 * Publishes with a deadline. Past it, or when the broker throws, the outcome is unknown for every message of the
 * batch: they are retried with the same ids, which is what keeps delivery at-least-once. The abort controller is
 * in `inFlight` while the publish runs, so a stopping relay can abort it.
 */
export async function publishWithDeadline(
  broker: Broker,
  messages: readonly OutgoingMessage[],
  publishTimeoutMs: number,
  inFlight: Set<AbortController>,
): Promise<PublishOutcome[]> {
  if (messages.length === 0) return [];
  const controller = new AbortController();
  inFlight.add(controller);
  let timer: LongTimer | undefined;
  const unknown = (error: string): PublishOutcome[] => messages.map(() => ({ status: 'retryable', error }));
  try {
    const deadline = new Promise<PublishOutcome[]>((resolve) => {
      // Long-armed: a deadline that came early would give up on every publish (and resend it).
      timer = setLongTimeout(() => {
        // Resolved before the abort, whose listener below would settle with the abort's less telling reason.
        resolve(unknown(`no acknowledgement within ${publishTimeoutMs} ms (outcome unknown; resent with the same id)`));
        controller.abort(new Error('publish deadline passed'));
      }, publishTimeoutMs);
      controller.signal.addEventListener('abort', () => resolve(unknown(String(controller.signal.reason))), { once: true });
    });
    const outcomes = await Promise.race([broker.publish(messages, { signal: controller.signal }), deadline]);
    if (!Array.isArray(outcomes) || outcomes.length !== messages.length) {
      return unknown(
        `broker ${broker.name} answered ${Array.isArray(outcomes) ? outcomes.length : 'no'} outcomes for ${messages.length} messages`,
      );
    }
    return outcomes;
  } catch (error) {
    return unknown(error instanceof Error ? error.message : String(error));
  } finally {
    timer?.clear();
    inFlight.delete(controller);
  }
}
