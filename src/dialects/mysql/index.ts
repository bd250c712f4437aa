import type { Dialect } from '../dialect.js';
import { enqueueMysql } from './enqueue.js';
import { mysqlRelayStore } from './relay-store.js';

export const mysqlDialect: Dialect = { name: 'mysql', enqueue: enqueueMysql, relayStore: mysqlRelayStore };
