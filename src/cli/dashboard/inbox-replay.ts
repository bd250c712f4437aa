import type { InboxDeadLetter } from '../../dedupe/message.js';

/**
 * Replaying a consumer-side dead letter from the sidecar: the handler lives in the consumer service, so the message
 * goes back to where it was consumed from, and the consumer runs it through processOnce again (a message it did
 * process after all is dropped as a duplicate). RabbitMQ only: the queue is the destination, reached through the
 * default exchange, so no other consumer gets the copy. A NATS JetStream message would go to every consumer of its
 * stream, and the stream drops a copy with the same Nats-Msg-Id within its duplicate window: replay those from the
 * consumer (inbox.replayDeadLetter).
 */

/** The consumer helper's own bookkeeping (attempts, last error, move tokens) and RabbitMQ's: a replay starts afresh. */
const BOOKKEEPING = /^(txoutbox-inbox-|x-death$|x-first-death-|x-last-death-|x-delivery-count$)/i;

export function replayable(letter: InboxDeadLetter): string | null {
  if (letter.source !== 'rabbitmq') {
    return `a ${letter.source} dead letter is replayed from its consumer (inbox.replayDeadLetter), not from the sidecar`;
  }
  if (letter.messageId === null) return 'it carried no message id, so the inbox could not make its replay once-only';
  return null;
}

/** Publishes the dead letter to its queue and waits for RabbitMQ's confirm; an unroutable copy is an error. */
export async function replayToRabbitMq(url: string, letter: InboxDeadLetter, timeoutMs = 10_000): Promise<void> {
  const amqp = await import('amqplib');
  const model = await amqp.connect(url, { timeout: timeoutMs });
  model.on('error', () => {});
  try {
    const channel = await model.createConfirmChannel();
    channel.on('error', () => {});
    const headers = Object.fromEntries(Object.entries(letter.headers).filter(([name]) => !BOOKKEEPING.test(name)));
    let returned = false;
    channel.on('return', () => {
      returned = true;
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`RabbitMQ did not confirm within ${timeoutMs} ms`)), timeoutMs);
      channel.publish(
        '',
        letter.destination,
        letter.payload,
        {
          persistent: true,
          mandatory: true,
          headers,
          ...(letter.messageId === null ? {} : { messageId: letter.messageId }),
          ...(letter.contentType === null ? {} : { contentType: letter.contentType }),
        },
        (error: unknown) => {
          clearTimeout(timer);
          if (error) reject(error instanceof Error ? error : new Error(String(error)));
          else resolve();
        },
      );
    });
    // basic.return comes before the confirm: by now a copy no queue took has been returned.
    if (returned) throw new Error(`RabbitMQ has no queue named ${letter.destination} (the copy was returned)`);
  } finally {
    await model.close().catch(() => {});
  }
}
