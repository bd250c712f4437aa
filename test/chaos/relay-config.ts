import type { DialectName, RelayOptions } from '../../src/index.js';

/** What the chaos suite asks of one relay process; it becomes that `txoutbox relay` process's config file. */
export interface RelayProcessConfig {
  dialect: DialectName;
  /** Database URL; on MySQL its path names the chaos database, which is how its connections are found and killed. */
  url: string;
  schema: string;
  instanceId: string;
  broker:
    | { type: 'rabbitmq'; url: string; routes: Record<string, { exchange: string; routingKey: string }> }
    | { type: 'nats'; url: string; routes: Record<string, string> };
  relay: Pick<RelayOptions, 'batchSize' | 'concurrency' | 'leaseMs' | 'publishTimeoutMs' | 'maxAttempts' | 'backoff'>;
}

/** The application_name of chaos relays' PostgreSQL connections, so the suite can kill exactly those. */
export const CHAOS_APPLICATION = 'txoutbox-chaos-relay';
