// A relay in a process of its own, to be killed with SIGKILL like a crashed host. It publishes the topic
// `orders.created` to a RabbitMQ queue and tells its parent (IPC) which ids RabbitMQ confirmed, pausing after each
// confirmed batch before the relay marks it sent: the window in which a crash makes the next relay resend.
import { createRabbitMqBroker } from '../../src/brokers/rabbitmq.js';
import { createRelay, type Broker } from '../../src/index.js';
import { childRelaySetup } from './child-relay.js';

const { dialect, schema, args, db } = childRelaySetup();
const [queue, amqpUrl, pauseMs] = args as [string, string, string];
const rabbit = createRabbitMqBroker({ url: amqpUrl, routes: { 'orders.created': { exchange: '', routingKey: queue } } });
const broker: Broker = {
  name: 'rabbitmq-reporting',
  async publish(messages, context) {
    const outcomes = await rabbit.publish(messages, context);
    const confirmed = messages.filter((_, i) => outcomes[i]?.status === 'ok').map((m) => m.id);
    if (confirmed.length > 0) process.send?.({ confirmed });
    // The crash window is held open after batches. Messages taken over from a killed relay are published one at a
    // time (so that one that kills the relay is found out); a pause after each of those would only slow recovery.
    if (confirmed.length > 1) await new Promise((resolve) => setTimeout(resolve, Number(pauseMs)));
    return outcomes;
  },
};
const relay = createRelay({
  db,
  dialect,
  schema,
  broker,
  batchSize: 100,
  leaseMs: 2000,
  publishTimeoutMs: 1000,
  pollIntervalMs: 50,
  instanceId: `child-${process.pid}`,
});
relay.start();
process.send?.({ started: true });
