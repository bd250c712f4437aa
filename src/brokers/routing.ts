import { ConfigError } from '../errors.js';
import type { Broker, OutgoingMessage, PublishContext, PublishOutcome } from './broker.js';
import type { BrokerDecorator } from './decorator.js';
import { errorText } from './errors.js';
import { permanent, retryable } from './outcomes.js';
import type { MessageRouter, Route } from './route.js';

/** Brokers by the names routes use: a plain object or a Map. */
export type BrokerTable = Readonly<Record<string, Broker>> | ReadonlyMap<string, Broker>;

export interface RoutingBrokerOptions {
  /** The brokers to route to, by name. The name prefixes the errors of that broker's outcomes. */
  brokers: BrokerTable;
  /**
   * Topic → broker name. A route may be a pattern where `*` stands for any run of characters: an exact route wins,
   * then the pattern with the longest fixed part; `'*'` alone catches every topic. Default none.
   */
  routes?: Readonly<Record<string, string>>;
  /**
   * Where a topic that no route names goes. Default: the only broker when there is one; otherwise such a topic is
   * a permanent failure (it is dead-lettered with "no route for topic").
   */
  fallback?: Broker;
}

/** A broker a message is routed to, under the name its errors carry. */
export interface RouteTarget {
  name: string;
  broker: Broker;
}

/** Matches a topic against a route pattern, where `*` stands for any run of characters. */
export function topicMatches(pattern: string, topic: string): boolean {
  if (!pattern.includes('*')) return pattern === topic;
  const regex = new RegExp(
    `^${pattern
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
  return regex.test(topic);
}

/** The broker name for a topic: an exact route first, then the pattern with the longest fixed part, then the only broker. */
export function routeTopic(routes: Record<string, string>, brokers: readonly string[], topic: string): string | undefined {
  if (Object.hasOwn(routes, topic)) return routes[topic];
  let best: { fixed: number; target: string } | undefined;
  for (const [pattern, target] of Object.entries(routes)) {
    if (!pattern.includes('*') || !topicMatches(pattern, topic)) continue;
    const fixed = pattern.replace(/\*/g, '').length;
    if (best === undefined || fixed > best.fixed) best = { fixed, target };
  }
  return best?.target ?? (brokers.length === 1 ? brokers[0] : undefined);
}

/**
 * One Broker in front of several: splits a batch by each topic's route, publishes each part to its broker in
 * parallel, and puts the outcomes back in order. The sidecar's `routes:` section is one of these.
 *
 * @example
 * ```ts
 * import { createRelay, RoutingBroker } from 'txoutbox';
 * import { createRabbitMqBroker } from 'txoutbox/rabbitmq';
 * import { createKafkaBroker } from 'txoutbox/kafka';
 *
 * const broker = new RoutingBroker({
 *   brokers: {
 *     rabbit: createRabbitMqBroker({ url: 'amqp://127.0.0.1:5672' }),
 *     kafka: createKafkaBroker({ brokers: ['127.0.0.1:9092'] }),
 *   },
 *   // Exact topics first, then the pattern with the longest fixed part; '*' takes the rest.
 *   routes: { 'billing.*': 'kafka', '*': 'rabbit' },
 * });
 * const relay = createRelay({ db, dialect: 'postgres', broker });
 * ```
 */
export class RoutingBroker implements Broker, MessageRouter<RouteTarget> {
  readonly name = 'router';
  private readonly targets: ReadonlyMap<string, RouteTarget>;
  private readonly routes: Record<string, string>;
  private readonly fallback: RouteTarget | undefined;

  /** Throws ConfigError when a route names a broker that is not in `brokers`, or there is nowhere to route to. */
  constructor(options: RoutingBrokerOptions) {
    const entries = options.brokers instanceof Map ? [...options.brokers] : Object.entries(options.brokers);
    this.targets = new Map(entries.map(([name, broker]) => [name, { name, broker }]));
    this.routes = { ...options.routes };
    this.fallback = options.fallback === undefined ? undefined : { name: options.fallback.name, broker: options.fallback };
    const names = [...this.targets.keys()];
    for (const [pattern, target] of Object.entries(this.routes)) {
      if (!this.targets.has(target)) {
        throw new ConfigError(
          `Invalid RoutingBroker options: routes.${pattern}: names broker "${target}", which is not in brokers (${names.join(', ') || 'none'})`,
        );
      }
    }
    if (names.length === 0 && this.fallback === undefined) {
      throw new ConfigError('Invalid RoutingBroker options: brokers: give at least one broker (or a fallback)');
    }
  }

  /** The broker a message goes to, or why it has none. */
  route(message: OutgoingMessage): Route<RouteTarget> {
    // With a fallback, the only-broker default does not apply: the fallback takes what no route names.
    const name = routeTopic(this.routes, this.fallback === undefined ? [...this.targets.keys()] : [], message.topic);
    const target = name === undefined ? this.fallback : this.targets.get(name);
    if (target !== undefined) return { to: target };
    return { refused: `no route for topic '${message.topic}' (add it, or a "*" route, to routes)` };
  }

  async publish(messages: readonly OutgoingMessage[], context: PublishContext): Promise<PublishOutcome[]> {
    const outcomes: PublishOutcome[] = new Array(messages.length);
    const groups = new Map<RouteTarget, number[]>();
    messages.forEach((message, index) => {
      const route = this.route(message);
      if ('refused' in route) outcomes[index] = permanent(route.refused);
      else groups.set(route.to, [...(groups.get(route.to) ?? []), index]);
    });
    await Promise.all(
      [...groups.entries()].map(async ([target, indexes]) => {
        let results: PublishOutcome[];
        try {
          results = await target.broker.publish(
            indexes.map((i) => messages[i]!),
            context,
          );
        } catch (error) {
          results = indexes.map(() => retryable(errorText(error)));
        }
        indexes.forEach((messageIndex, i) => {
          const outcome = results[i] ?? retryable(`broker ${target.name} answered too few outcomes`);
          outcomes[messageIndex] = outcome.status === 'ok' ? outcome : { ...outcome, error: `${target.name}: ${outcome.error}` };
        });
      }),
    );
    return outcomes;
  }

  /** Closes every broker it routes to (and the fallback), all at once; a failing close does not stop the others. */
  async close(): Promise<void> {
    const all = [...this.targets.values(), ...(this.fallback === undefined ? [] : [this.fallback])];
    await Promise.all([...new Set(all.map((t) => t.broker))].map((broker) => broker.close?.().catch(() => {})));
  }
}

/**
 * A decorator that sends the topics `routes` names to those brokers and everything else to the broker it wraps:
 * `decorate(rabbit, routeTopics({ brokers: { audit: kafka }, routes: { 'audit.*': 'audit' } }))`.
 */
export function routeTopics(options: Omit<RoutingBrokerOptions, 'fallback'>): BrokerDecorator {
  return (fallback) => new RoutingBroker({ ...options, fallback });
}
