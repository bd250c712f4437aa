import { ROOT_CONTEXT, context, trace } from '@opentelemetry/api';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../support/harness.js';
import { StackContextManager } from '../support/otel-context.js';

describe('enqueue stores the active traceparent', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());
  afterEach(() => context.disable());

  it("adds the active span's traceparent to the headers, and keeps one the message brings", async () => {
    context.setGlobalContextManager(new StackContextManager());
    const active = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
    });
    await h.db.transaction().execute((trx) =>
      context.with(active, () =>
        h.outbox.enqueue(trx, [
          { id: 't1', topic: 't', payload: 1, headers: { 'x-a': 'b' } },
          {
            id: 't2',
            topic: 't',
            payload: 2,
            headers: { traceparent: '00-11111111111111111111111111111111-2222222222222222-00' },
          },
        ]),
      ),
    );
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, { id: 't3', topic: 't', payload: 3 }));
    const headers = Object.fromEntries((await h.rows()).map((row) => [row.id, row.headers]));
    expect(headers).toEqual({
      t1: { 'x-a': 'b', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
      t2: { traceparent: '00-11111111111111111111111111111111-2222222222222222-00' },
      t3: {},
    });
  });
});
