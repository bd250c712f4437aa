import { permanent, retryable, type Failure } from '../outcomes.js';

/**
 * Protocol errors that mean this message (or its destination) can never be accepted as it is. Everything else —
 * connections, timeouts, leader changes, missing replicas, authentication, producer state — is retryable.
 */
const PERMANENT_ERRORS = new Set([
  'UNKNOWN_TOPIC_OR_PARTITION', // allowAutoTopicCreation is off: the topic does not exist
  'INVALID_TOPIC_EXCEPTION',
  'TOPIC_AUTHORIZATION_FAILED',
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_RECORD', // e.g. a keyless message to a compacted topic
  'POLICY_VIOLATION',
]);

/** The Kafka protocol error type (e.g. `MESSAGE_TOO_LARGE`) an error carries, looking through kafkajs's wrappers. */
export function kafkaErrorType(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 8 && current instanceof Error; depth++) {
    const type = (current as { type?: unknown }).type;
    if (typeof type === 'string') return type;
    current = current.cause;
  }
  return undefined;
}

/** Classifies a kafkajs error as a publish outcome. */
export function classifyKafkaError(error: unknown): Failure {
  const type = kafkaErrorType(error);
  const text = describeKafkaError(error);
  const detail = type === undefined || text.includes(type) ? text : `${text} [${type}]`;
  return type !== undefined && PERMANENT_ERRORS.has(type) ? permanent(detail) : retryable(detail);
}

/** An error as text: its name, message and the cause's message (kafkajs wraps the reason in its own errors). */
export function describeKafkaError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error && !error.message.includes(error.cause.message) ? `: ${error.cause.message}` : '';
  return `${error.name}: ${error.message}${cause}`;
}
