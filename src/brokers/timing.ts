import type { OutgoingMessage } from './broker.js';
import { withPublish, type BrokerDecorator } from './decorator.js';

/** Told how long one publish call (a batch) waited for the broker, whether it answered or threw. */
export type PublishObserver = (seconds: number, messages: readonly OutgoingMessage[]) => void;

/**
 * Times each publish call of a broker and hands the duration to `observe` (a histogram, a log line, ...). The
 * observer is a plain callback so that this decorator needs no metrics library.
 */
export function timePublishes(observe: PublishObserver): BrokerDecorator {
  return (broker) =>
    withPublish(broker, async (messages, context) => {
      const start = process.hrtime.bigint();
      try {
        return await broker.publish(messages, context);
      } finally {
        observe(Number(process.hrtime.bigint() - start) / 1e9, messages);
      }
    });
}
