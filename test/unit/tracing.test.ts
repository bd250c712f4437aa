import { randomBytes } from 'node:crypto';
import { ROOT_CONTEXT, context, trace, type Context, type Span, type SpanContext, type Tracer } from '@opentelemetry/api';
import { StackContextManager } from '../support/otel-context.js';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBroker, type OutgoingMessage } from '../../src/index.js';
import { activeTraceparent } from '../../src/trace-context.js';
import { traceBroker } from '../../src/brokers/tracing.js';

/** A recording tracer: each span gets a fresh id and remembers its parent. */
function recordingTracer(started: { name: string; parent: SpanContext | undefined; own: SpanContext; ended: boolean }[]): Tracer {
  const startSpan = (name: string, _options?: unknown, ctx?: Context): Span => {
    const parent = trace.getSpanContext(ctx ?? context.active());
    const own: SpanContext = {
      traceId: parent?.traceId ?? randomBytes(16).toString('hex'),
      spanId: randomBytes(8).toString('hex'),
      traceFlags: 1,
    };
    const record = { name, parent, own, ended: false };
    started.push(record);
    const span = trace.wrapSpanContext(own);
    return Object.assign(span, { end: () => void (record.ended = true), isRecording: () => true });
  };
  return {
    startSpan,
    startActiveSpan: (() => {
      throw new Error('unused');
    }) as Tracer['startActiveSpan'],
  };
}

const message = (headers: Record<string, string>): OutgoingMessage => ({
  id: 'm1',
  topic: 'orders',
  key: null,
  payload: Buffer.from('{}'),
  contentType: 'application/json',
  headers,
  attempt: 1,
  createdAt: new Date(),
});
const PARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('tracing with @opentelemetry/api only', () => {
  afterEach(() => {
    trace.disable();
    context.disable();
  });

  it('without an SDK, the traceparent stored at enqueue reaches the broker unchanged', async () => {
    const broker = new MemoryBroker();
    await traceBroker(broker).publish([message({ traceparent: PARENT, 'x-a': '1' })], { signal: new AbortController().signal });
    expect(broker.received()[0]!.headers).toEqual({ traceparent: PARENT, 'x-a': '1' });
    expect(activeTraceparent()).toBeNull();
  });

  it("with a tracer, publish is a span whose parent is the message's trace, and the broker gets that span's traceparent", async () => {
    const started: Parameters<typeof recordingTracer>[0] = [];
    trace.setGlobalTracerProvider({ getTracer: () => recordingTracer(started) });
    const broker = new MemoryBroker();
    await traceBroker(broker).publish([message({ traceparent: PARENT })], { signal: new AbortController().signal });
    expect(started).toHaveLength(1);
    expect(started[0]).toMatchObject({ name: 'publish orders', ended: true });
    expect(started[0]!.parent).toMatchObject({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331' });
    expect(broker.received()[0]!.headers.traceparent).toBe(`00-0af7651916cd43dd8448eb211c80319c-${started[0]!.own.spanId}-01`);
  });

  it('enqueue reads the active span as a traceparent', () => {
    context.setGlobalContextManager(new StackContextManager());
    const active = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: 1,
    });
    expect(context.with(active, () => activeTraceparent())).toBe(PARENT);
  });
});
