import { SpanKind, SpanStatusCode, context, trace, type Span } from '@opentelemetry/api';
import { withPublish, type BrokerDecorator } from './decorator.js';
import { formatTraceparent, parseTraceparent } from '../trace-context.js';

const tracer = () => trace.getTracer('txoutbox');

/**
 * Wraps a broker so each publish continues the trace the message was enqueued in: a PRODUCER span `publish
 * <topic>` whose parent is the message's `traceparent` header, and the broker receives that span's traceparent.
 * Needs only @opentelemetry/api: with no SDK registered the span records nothing and the header travels unchanged.
 */
export const traceBroker: BrokerDecorator = (broker) =>
  withPublish(broker, async (messages, publishContext) => {
    const spans: Span[] = [];
    const traced = messages.map((message) => {
      const parent = parseTraceparent(message.headers['traceparent']);
      const parentContext = parent === null ? context.active() : trace.setSpanContext(context.active(), parent);
      const span = tracer().startSpan(
        `publish ${message.topic}`,
        {
          kind: SpanKind.PRODUCER,
          attributes: {
            'messaging.system': broker.name,
            'messaging.operation.type': 'publish',
            'messaging.destination.name': message.topic,
            'messaging.message.id': message.id,
            'txoutbox.attempt': message.attempt,
            ...(message.key === null ? {} : { 'txoutbox.key': message.key }),
          },
        },
        parentContext,
      );
      spans.push(span);
      const own = span.spanContext();
      // A recording span has ids of its own; a non-recording one (no SDK) carries the parent's, or none.
      if (!trace.isSpanContextValid(own)) return message;
      return { ...message, headers: { ...message.headers, traceparent: formatTraceparent(own) } };
    });
    try {
      const outcomes = await broker.publish(traced, publishContext);
      outcomes.forEach((outcome, index) => {
        if (outcome.status !== 'ok') spans[index]?.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error });
      });
      return outcomes;
    } catch (error) {
      for (const span of spans) span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
      throw error;
    } finally {
      for (const span of spans) span.end();
    }
  });
