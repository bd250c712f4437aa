// A relay in a process of its own whose broker kills the process when it is handed a given message id, as a
// message that crashes the relay would (a native module's fault, an out-of-memory, an unhandled throw). It tells
// its parent (IPC) which ids the in-memory broker accepted, right when it accepts them.
import { createRelay, type Broker } from '../../src/index.js';
import { childRelaySetup } from './child-relay.js';

const { dialect, schema, args, db } = childRelaySetup();
const [poisonId, leaseMs, maxAttempts] = args as [string, string, string];
const broker: Broker = {
  name: 'crashing',
  async publish(messages) {
    if (messages.some((m) => m.id === poisonId)) {
      process.send?.({ crashed: messages.map((m) => m.id) });
      // Let the IPC message leave before dying the hard way.
      await new Promise((resolve) => setTimeout(resolve, 20));
      process.kill(process.pid, 'SIGKILL');
    }
    process.send?.({ accepted: messages.map((m) => m.id) });
    return messages.map(() => ({ status: 'ok' as const }));
  },
};
const relay = createRelay({
  db,
  dialect,
  schema,
  broker,
  batchSize: 50,
  leaseMs: Number(leaseMs),
  publishTimeoutMs: Math.floor(Number(leaseMs) / 2),
  maxAttempts: Number(maxAttempts),
  minPollIntervalMs: 20,
  pollIntervalMs: 100,
});
relay.on('dead', (dead) => process.send?.({ dead: dead.map((d) => d.message.id) }));
relay.start();
process.send?.({ started: true });
