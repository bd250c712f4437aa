import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Broker, OutgoingMessage, PublishOutcome } from '../../../src/index.js';
import { waitFor } from '../relay-helpers.js';

/** A message as a real consumer of the broker received it, mapped back to txoutbox's fields. */
export interface ReceivedMessage {
  id: string;
  key: string | null;
  headers: Record<string, string>;
  payload: Buffer;
  contentType: string | null;
}

/** One adapter wired to a real server, with a real consumer on the destination its topic routes to. */
export interface BrokerUnderTest {
  broker: Broker;
  /** A topic routed to a destination that exists and that `received()` consumes. */
  topic: string;
  /** A topic routed to a destination that does not exist (or that nothing can receive). */
  unroutableTopic: string;
  /** Everything the real consumer has received so far, in arrival order (duplicates included). */
  received(): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

export interface BrokerFixture {
  name: string;
  /** Null when the server is there; otherwise why the suite cannot run (e.g. KAFKA_BROKERS is not set). */
  skipReason(): Promise<string | null>;
  open(): Promise<BrokerUnderTest>;
  /** Stops the server and starts it again, resolving once it answers. */
  restart(): Promise<void>;
  /** Null when restart() can really restart the server here; otherwise why the restart test cannot run. */
  restartSkipReason?(): Promise<string | null>;
  /** True when the broker itself drops a resend of an id it has seen (NATS JetStream's duplicate window). */
  dedupes: boolean;
  /** Headers the adapter itself adds, which the contract ignores when comparing (e.g. txoutbox-id). */
  ownHeaders?: string[];
}

let sequence = 0;

export function outgoing(topic: string, overrides: Partial<OutgoingMessage> = {}): OutgoingMessage {
  sequence++;
  return {
    id: `contract-${Date.now()}-${sequence}`,
    topic,
    key: null,
    payload: Buffer.from(JSON.stringify({ n: sequence })),
    contentType: 'application/json',
    headers: {},
    attempt: 1,
    createdAt: new Date(),
    ...overrides,
  };
}

const signal = () => new AbortController().signal;

/**
 * Publishes until every message is acknowledged, as the relay would (same ids, retry on non-ok), and while
 * `keepGoing` holds keeps publishing fresh messages too. Returns every message acknowledged and how many
 * outcomes were not ok.
 */
async function publishUntilAcked(
  broker: Broker,
  messages: OutgoingMessage[],
  timeoutMs: number,
  more?: { keepGoing: () => boolean; next: () => OutgoingMessage },
): Promise<{ acked: OutgoingMessage[]; failures: number }> {
  const deadline = Date.now() + timeoutMs;
  let pending = messages;
  const acked: OutgoingMessage[] = [];
  let failures = 0;
  while (pending.length > 0 || more?.keepGoing()) {
    if (pending.length === 0 && more !== undefined) pending = [more.next()];
    if (Date.now() > deadline) throw new Error(`${pending.length} messages still not acknowledged after ${timeoutMs} ms`);
    let outcomes: PublishOutcome[];
    try {
      outcomes = await broker.publish(pending, { signal: AbortSignal.timeout(2000) });
    } catch {
      outcomes = pending.map(() => ({ status: 'retryable', error: 'threw' }));
    }
    acked.push(...pending.filter((_, index) => outcomes[index]?.status === 'ok'));
    pending = pending.filter((_, index) => outcomes[index]?.status !== 'ok');
    if (pending.length > 0) {
      failures += pending.length;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { acked, failures };
}

/**
 * The contract every broker adapter must keep, run against the real server. It proves what the relay relies on:
 * an `ok` means a real consumer can read the message with its id, key, headers and payload; order per key is
 * kept; a destination that does not exist is a failure, not a success; and nothing acknowledged is lost when
 * the broker restarts, after which the adapter recovers by itself.
 */
export function brokerContract(fixture: BrokerFixture): void {
  describe(`${fixture.name} broker contract`, () => {
    let skip: string | null = null;
    let subject: BrokerUnderTest | null = null;
    beforeAll(async () => {
      skip = await fixture.skipReason();
      if (skip === null) subject = await fixture.open();
    });
    afterAll(async () => {
      await subject?.close();
    });
    const own = new Set((fixture.ownHeaders ?? []).map((name) => name.toLowerCase()));
    const userHeaders = (headers: Record<string, string>) =>
      Object.fromEntries(Object.entries(headers).filter(([name]) => !own.has(name.toLowerCase())));

    const run = (name: string, test: (s: BrokerUnderTest) => Promise<void>, timeoutMs = 30_000, needsRestart = false) =>
      it(
        name,
        async (context) => {
          if (skip !== null) return context.skip(skip);
          const restartSkip = needsRestart ? ((await fixture.restartSkipReason?.()) ?? null) : null;
          if (restartSkip !== null) return context.skip(restartSkip);
          await test(subject!);
        },
        timeoutMs,
      );

    run('an acknowledged message reaches a real consumer with its id, key, headers and payload intact', async (s) => {
      const keyed = outgoing(s.topic, {
        key: 'order-42',
        headers: { 'x-tenant': 'acme', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
        payload: Buffer.from(JSON.stringify({ orderId: 42, note: 'café ☕' })),
      });
      const bytes = outgoing(s.topic, { payload: Buffer.from([0, 1, 2, 255]), contentType: 'application/octet-stream' });
      const outcomes = await s.broker.publish([keyed, bytes], { signal: signal() });
      expect(outcomes).toEqual([{ status: 'ok' }, { status: 'ok' }]);
      await waitFor(
        async () => (await s.received()).filter((m) => m.id === keyed.id || m.id === bytes.id).length >= 2,
        10_000,
        'both messages',
      );
      const received = await s.received();
      const gotKeyed = received.find((m) => m.id === keyed.id)!;
      expect(gotKeyed.key).toBe('order-42');
      // Every header sent arrives unchanged; what the client or the adapter adds on top is not our business.
      expect(userHeaders(gotKeyed.headers)).toMatchObject(keyed.headers);
      expect(gotKeyed.payload.equals(keyed.payload)).toBe(true);
      const gotBytes = received.find((m) => m.id === bytes.id)!;
      expect(gotBytes.key).toBeNull();
      expect(gotBytes.payload.equals(bytes.payload)).toBe(true);
      if (gotBytes.contentType !== null) expect(gotBytes.contentType).toBe('application/octet-stream');
    });

    run('keeps per-key order at the consumer', async (s) => {
      const keys = ['k1', 'k2', 'k3', 'k4', 'k5'].map((k) => `${k}-${Date.now()}`);
      const sent = new Map<string, string[]>(keys.map((k) => [k, []]));
      // The relay sends at most one message per key in a batch, and the next only after the previous was acked.
      for (let round = 0; round < 20; round++) {
        const batch = keys.map((key) => outgoing(s.topic, { key }));
        const outcomes = await s.broker.publish(batch, { signal: signal() });
        expect(outcomes.every((o) => o.status === 'ok')).toBe(true);
        batch.forEach((m) => sent.get(m.key!)!.push(m.id));
      }
      await waitFor(
        async () => (await s.received()).filter((m) => keys.includes(m.key ?? '')).length >= 100,
        15_000,
        '100 keyed messages',
      );
      const received = await s.received();
      for (const key of keys) expect(received.filter((m) => m.key === key).map((m) => m.id)).toEqual(sent.get(key));
    });

    run('reports a destination that does not exist as a permanent failure, so it is dead-lettered at once', async (s) => {
      const [outcome] = await s.broker.publish([outgoing(s.unroutableTopic)], { signal: AbortSignal.timeout(5000) });
      expect(outcome!.status).toBe('permanent');
    });

    run(
      fixture.dedupes
        ? 'drops a resend of an id it has already stored'
        : 'delivers a resend with the same id, so the consumer can recognise it',
      async (s) => {
        const message = outgoing(s.topic, { key: `dup-${Date.now()}` });
        expect(await s.broker.publish([message], { signal: signal() })).toEqual([{ status: 'ok' }]);
        expect(await s.broker.publish([{ ...message, attempt: 2 }], { signal: signal() })).toEqual([{ status: 'ok' }]);
        const after = outgoing(s.topic, { key: message.key });
        expect(await s.broker.publish([after], { signal: signal() })).toEqual([{ status: 'ok' }]);
        await waitFor(async () => (await s.received()).some((m) => m.id === after.id), 10_000, 'the message after the resend');
        const copies = (await s.received()).filter((m) => m.id === message.id);
        expect(copies).toHaveLength(fixture.dedupes ? 1 : 2);
      },
    );

    run(
      'loses nothing it acknowledged when the broker restarts mid-publish, and recovers by itself',
      async (s) => {
        const before = await publishUntilAcked(
          s.broker,
          Array.from({ length: 20 }, (_, i) => outgoing(s.topic, { key: `restart-${i % 3}` })),
          20_000,
        );
        let restarted = false;
        const restarting = fixture.restart().finally(() => (restarted = true));
        // Keep publishing the whole time the broker goes down and comes back: outcomes may fail, never falsely
        // succeed. Seeing failures proves the publishing really went through the outage.
        let n = 0;
        const during = await publishUntilAcked(s.broker, [], 120_000, {
          keepGoing: () => !restarted,
          next: () => outgoing(s.topic, { key: `restart-${n++ % 3}` }),
        });
        await restarting;
        expect(during.failures, 'no publish failed: the restart was never observed').toBeGreaterThan(0);
        const after = await publishUntilAcked(
          s.broker,
          Array.from({ length: 20 }, (_, i) => outgoing(s.topic, { key: `restart-${i % 3}` })),
          30_000,
        );
        const acked = [...before.acked, ...during.acked, ...after.acked];
        await waitFor(
          async () => {
            const ids = new Set((await s.received()).map((m) => m.id));
            return acked.every((m) => ids.has(m.id));
          },
          30_000,
          `all ${acked.length} acknowledged messages after the restart`,
        );
      },
      150_000,
      true,
    );
  });
}
