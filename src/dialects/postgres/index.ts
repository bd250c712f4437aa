import type { Dialect } from '../dialect.js';
import { enqueuePostgres } from './enqueue.js';
import { postgresRelayStore } from './relay-store.js';

export const postgresDialect: Dialect = { name: 'postgres', enqueue: enqueuePostgres, relayStore: postgresRelayStore };
