import type { Dialect } from '../dialect.js';
import { postgresAdminStore } from './admin.js';
import { enqueuePostgres } from './enqueue.js';
import { postgresInboxStore } from './inbox-store.js';
import { openPostgresPool } from './pool.js';
import { postgresRelayStore } from './relay-store.js';

export const postgresDialect: Dialect = {
  name: 'postgres',
  logicalDecoding: true,
  commitWakeups: true,
  urlSchemes: ['postgres', 'postgresql'],
  enqueue: enqueuePostgres,
  relayStore: postgresRelayStore,
  adminStore: postgresAdminStore,
  inboxStore: postgresInboxStore,
  openPool: openPostgresPool,
};
