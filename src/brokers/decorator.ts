import type { Broker } from './broker.js';

/**
 * Takes a broker and returns one that does something more around its publishes (trace them, time them, route them
 * to other brokers), so behaviour is added by wrapping, not by editing adapters. Modelled on watermill's publisher
 * decorators (message/decorator.go).
 */
export type BrokerDecorator = (broker: Broker) => Broker;

/**
 * `broker` wrapped by each decorator in turn: the first one wraps the broker itself, the last one is outermost and
 * sees each publish first. `decorate(b, timing, traceBroker)` is `traceBroker(timing(b))`.
 */
export function decorate(broker: Broker, ...decorators: readonly BrokerDecorator[]): Broker {
  return decorators.reduce<Broker>((inner, decorator) => decorator(inner), broker);
}

/** A broker that keeps `inner`'s name and close and publishes through `publish`: the shape of most decorators. */
export function withPublish(inner: Broker, publish: Broker['publish']): Broker {
  return {
    name: inner.name,
    publish,
    // Only when the inner broker has one, so a wrapped broker closes exactly like the broker it wraps.
    ...(inner.close === undefined ? {} : { close: () => inner.close!() }),
  };
}
