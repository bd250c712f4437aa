import { describe, expect, it } from 'vitest';
import {
  decorate,
  MemoryBroker,
  timePublishes,
  type Broker,
  type BrokerDecorator,
  type OutgoingMessage,
} from '../../src/index.js';

const message = (topic: string, id = topic): OutgoingMessage => ({
  id,
  topic,
  key: null,
  payload: Buffer.from('{}'),
  contentType: 'application/json',
  headers: {},
  attempt: 1,
  createdAt: new Date(),
});
const context = () => ({ signal: new AbortController().signal });

/** A decorator that records, in `seen`, that a publish passed through it. */
const mark =
  (label: string, seen: string[]): BrokerDecorator =>
  (inner) => ({ name: inner.name, publish: (messages, ctx) => (seen.push(label), inner.publish(messages, ctx)) });

describe('broker decorators', () => {
  it('decorate() applies decorators in order: the last given is outermost and sees each publish first', async () => {
    const seen: string[] = [];
    const broker = new MemoryBroker();
    const decorated = decorate(broker, mark('inner', seen), mark('outer', seen));
    expect(await decorated.publish([message('a')], context())).toEqual([{ status: 'ok' }]);
    expect(seen).toEqual(['outer', 'inner']);
    expect(decorated.name).toBe('memory');
    expect(decorate(broker)).toBe(broker);
  });

  it('timePublishes reports each publish call with its duration and batch, also when the broker throws', async () => {
    const timings: { seconds: number; ids: string[] }[] = [];
    const observe = timePublishes((seconds, messages) => timings.push({ seconds, ids: messages.map((m) => m.id) }));
    const slow = new MemoryBroker().fail({ kind: 'slow', ms: 50 });
    await observe(slow).publish([message('a'), message('b')], context());
    const throwing: Broker = {
      name: 'throwing',
      publish: async () => {
        throw new Error('boom');
      },
    };
    await expect(observe(throwing).publish([message('c')], context())).rejects.toThrow('boom');
    expect(timings.map((t) => t.ids)).toEqual([['a', 'b'], ['c']]);
    expect(timings[0]!.seconds).toBeGreaterThanOrEqual(0.045);
    expect(timings[1]!.seconds).toBeGreaterThanOrEqual(0);
  });

  it('a timed broker keeps the name and the close of the broker it wraps', async () => {
    let closed = 0;
    const closable: Broker = {
      name: 'closable',
      publish: async (messages) => messages.map(() => ({ status: 'ok' })),
      close: async () => void closed++,
    };
    const timed = timePublishes(() => {})(closable);
    expect(timed.name).toBe('closable');
    await timed.close?.();
    expect(closed).toBe(1);
    expect(timePublishes(() => {})(new MemoryBroker()).close).toBeUndefined();
  });
});
