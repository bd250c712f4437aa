import { ROOT_CONTEXT, context, trace, type Context, type ContextManager } from '@opentelemetry/api';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness } from '../support/harness.js';

/** A synchronous context manager: enqueue reads the active context before its first await. */
class StackContextManager implements ContextManager {
  private stack: Context[] = [];
  active = () => this.stack[this.stack.length - 1] ?? ROOT_CONTEXT;
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ) {
    this.stack.push(ctx);
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.stack.pop();
    }
  }
  bind = <T>(_ctx: Context, target: T) => target;
  enable = () => this;
  disable = () => ((this.stack = []), this);
}

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
