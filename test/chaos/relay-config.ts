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
  /** Mode 'logical' (PostgreSQL): the run's own slot and publication, dropped when it ends. Absent: polling. */
  logical?: { slot: string; publication: string };
}

/** The application_name prefix of chaos relays' PostgreSQL connections, so the suite can kill exactly those. */
export const CHAOS_APPLICATION = 'txoutbox-chaos-relay';

/**
 * One relay process's application_name: every connection it opens carries it, its slot's WAL sender too (the
 * sidecar streams over the database URL), so the suite can tell which process holds the slot.
 */
export const chaosApplicationOf = (instanceId: string) => `${CHAOS_APPLICATION}.${instanceId}`.slice(0, 63);
