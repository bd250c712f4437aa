// A logical relay in a process of its own, to be killed with SIGKILL like a crashed host. It publishes to the
// in-memory broker and tells its parent (IPC) once it holds the slot and which ids it published. Given a fourth
// argument, it kills itself whenever it publishes the message with that id (a message that crashes the relay); a
// fifth sets the relay's batchSize (and concurrency 1), to make a relay that keeps few messages in memory.
import { createRelay, MemoryBroker, type Broker } from '../../src/index.js';
import { childRelaySetup } from './child-relay.js';

const { schema, args, db } = childRelaySetup();
const [slot, publication, url, killer, batchSize] = args as [string, string, string, string | undefined, string | undefined];
const memory = new MemoryBroker();
const small = batchSize === undefined ? {} : { batchSize: Number(batchSize), concurrency: 1 };
const broker: Broker = {
  name: 'reporting',
  async publish(messages, context) {
    if (killer !== undefined && killer !== '' && messages.some((m) => m.id === killer)) process.kill(process.pid, 'SIGKILL');
    const outcomes = await memory.publish(messages, context);
    process.send?.({ published: messages.map((m) => m.id) });
    return outcomes;
  },
};
const relay = createRelay({ db, dialect: 'postgres', schema, broker, mode: 'logical', slot, publication, replication: url, maxAttempts: 3, ...small });
relay.on('owned', (_slot, owned) => process.send?.({ owned }));
await relay.start();
process.send?.({ started: true });
