import { ownEntry, type Route } from '../route.js';
import { describeKafkaError } from './errors.js';

const KAFKA_TOPIC = /^[A-Za-z0-9._-]{1,249}$/;

/** Why a name cannot be a Kafka topic, or null when it can. */
export function kafkaTopicProblem(name: string): string | null {
  if (name === '.' || name === '..') return 'cannot be "." or ".."';
  if (!KAFKA_TOPIC.test(name)) return 'must be 1-249 characters of A-Z a-z 0-9 . _ -';
  return null;
}

/** The Kafka topic a txoutbox topic goes to: `routes`, then `route`, then the topic itself. */
export function kafkaTopicFor(
  topic: string,
  routes: Record<string, string>,
  route?: (topic: string) => string | undefined,
): Route<string> {
  let target: unknown = ownEntry(routes, topic);
  if (target === undefined && route !== undefined) {
    try {
      target = route(topic);
    } catch (error) {
      return { refused: `the route function threw for topic "${topic}": ${describeKafkaError(error)}` };
    }
  }
  if (target === undefined) target = topic;
  if (typeof target !== 'string')
    return { refused: `the route function returned ${typeof target} for topic "${topic}", not a string` };
  const problem = kafkaTopicProblem(target);
  if (problem !== null) {
    const via = target === topic ? '' : ` (routed from "${topic}")`;
    return { refused: `"${target}"${via} is not a legal Kafka topic name: it ${problem}; map the topic with routes` };
  }
  return { to: target };
}
