import type { Dialect } from '../dialect.js';
import { mysqlAdminStore } from './admin.js';
import { enqueueMysql } from './enqueue.js';
import { mysqlInboxStore } from './inbox-store.js';
import { openMysqlPool } from './pool.js';
import { mysqlRelayStore } from './relay-store.js';

export const mysqlDialect: Dialect = {
  name: 'mysql',
  logicalDecoding: false,
  commitWakeups: false,
  urlSchemes: ['mysql', 'mariadb'],
  enqueue: enqueueMysql,
  relayStore: mysqlRelayStore,
  // MySQL relays only poll, so the relay mode does not change what retry and discard write.
  adminStore: (db, names) => mysqlAdminStore(db, names),
  inboxStore: mysqlInboxStore,
  openPool: openMysqlPool,
};
