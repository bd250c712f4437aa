// W3C trace context, shared by enqueue (which stores the active span) and the tracing decorator (which continues it):
// here at the root so that brokers/ needs nothing from outbox/.
import { TraceFlags, context, trace, type SpanContext } from '@opentelemetry/api';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Reads a W3C traceparent header (version 00); null when absent or malformed. */
export function parseTraceparent(header: string | undefined): SpanContext | null {
  const match = header === undefined ? null : TRACEPARENT.exec(header.trim());
  if (match === null) return null;
  const spanContext: SpanContext = {
    traceId: match[1]!,
    spanId: match[2]!,
    traceFlags: Number.parseInt(match[3]!, 16) & TraceFlags.SAMPLED,
    isRemote: true,
  };
  return trace.isSpanContextValid(spanContext) ? spanContext : null;
}

export function formatTraceparent(spanContext: SpanContext): string {
  return `00-${spanContext.traceId}-${spanContext.spanId}-${(spanContext.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The active span's traceparent, when there is a valid one (an OpenTelemetry SDK is tracing this call). */
export function activeTraceparent(): string | null {
  const span = trace.getSpan(context.active());
  const spanContext = span?.spanContext();
  return spanContext !== undefined && trace.isSpanContextValid(spanContext) ? formatTraceparent(spanContext) : null;
}
