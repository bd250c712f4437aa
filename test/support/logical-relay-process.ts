// A logical relay in a process of its own, to be killed with SIGKILL like a crashed host. It publishes to the
// in-memory broker and tells its parent (IPC) once it holds the slot and which ids it published.
import { createRelay, MemoryBroker, type Broker } from '../../src/index.js';
import { childRelaySetup } from './child-relay.js';

const { schema, args, db } = childRelaySetup();
const [slot, publication, url] = args as [string, string, string];
const memory = new MemoryBroker();
const broker: Broker = {
  name: 'reporting',
  async publish(messages, context) {
    const outcomes = await memory.publish(messages, context);
    process.send?.({ published: messages.map((m) => m.id) });
    return outcomes;
  },
};
const relay = createRelay({ db, dialect: 'postgres', schema, broker, mode: 'logical', slot, publication, replication: url });
relay.on('owned', (_slot, owned) => process.send?.({ owned }));
await relay.start();
process.send?.({ started: true });
