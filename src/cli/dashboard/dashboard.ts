import type { IncomingMessage, ServerResponse } from 'node:http';
import { inboxNames } from '../../dialects/inbox-store.js';
import { inboxStoreFor } from '../../dialects/index.js';
import { logicalNamesOf, relaySettingsFor, type LoadedConfig } from '../config.js';
import { openTargets, type OutboxTarget } from '../context.js';
import { openDatabase, schemaOf, tableLabel, type OpenDatabase } from '../databases.js';
import type { TableLabels } from '../metrics.js';
import { loadAssets } from './assets.js';
import { isLoopback } from './guard.js';
import { createInboxRoutes, type InboxSource, type ReplayBroker } from './inbox-routes.js';
import { createRoutes } from './routes.js';
import { DashboardSampler } from './sampler.js';

/** Connections per database for the dashboard's page reads and actions, apart from the relays' pool. */
const DASHBOARD_POOL_SIZE = 2;
/** How often every table is read for the overview and the chart. */
export const DEFAULT_SAMPLE_INTERVAL_MS = 5000;

export interface DashboardOptions {
  /** The address the server listens on: bound to a loopback address, it answers only loopback host names. */
  host: string;
  /** Enables writes (http.dashboardToken); null keeps the dashboard read-only. */
  token: string | null;
  sampleIntervalMs?: number;
  /** In the relay: its published counter per table, for an exact rate. */
  publishedTotal?: (labels: TableLabels) => number;
  onError?: (error: Error) => void;
}

export interface Dashboard {
  /** Answers the dashboard's paths; false for any other (so it can share a server with /metrics). */
  handle(request: IncomingMessage, response: ServerResponse): boolean;
  /** Reads every table now, as the sampler does every few seconds (joins a round in flight). */
  sampleNow(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Opens what the dashboard reads: every outbox table and inbox of the configuration, on pools of its own (never the
 * relays'), and starts the sampler.
 */
export async function openDashboard(loaded: LoadedConfig, options: DashboardOptions): Promise<Dashboard> {
  const onError = options.onError ?? (() => {});
  const assets = await loadAssets();
  const small = {
    ...loaded,
    config: {
      ...loaded.config,
      databases: loaded.config.databases.map((db) => ({ ...db, poolSize: Math.min(db.poolSize, DASHBOARD_POOL_SIZE) })),
    },
  };
  const opened = small.config.databases.some((db) => db.tables.length > 0)
    ? await openTargets(small, {}, (_db, error) => onError(error))
    : { databases: [] as OpenDatabase[], targets: [] as OutboxTarget[], close: async () => {} };
  const own: OpenDatabase[] = [];
  const inboxes: InboxSource[] = [];
  const sampleIntervalMs = options.sampleIntervalMs ?? DEFAULT_SAMPLE_INTERVAL_MS;
  let sampler: DashboardSampler | null = null;
  try {
    for (const config of small.config.databases) {
      if (config.inbox === undefined) continue;
      let database = opened.databases.find((d) => d.config.name === config.name);
      if (database === undefined) {
        database = await openDatabase(config, onError);
        own.push(database);
        await database.ping();
      }
      inboxes.push({
        label: tableLabel(config, config.inbox),
        database,
        names: inboxNames(config.inbox.table, schemaOf(config, config.inbox) ?? null),
        store: inboxStoreFor(config.dialect),
      });
    }
    sampler = new DashboardSampler(opened.targets, {
      intervalMs: sampleIntervalMs,
      slotsOf: (target) => {
        const settings = relaySettingsFor(loaded.config, target.table);
        return settings.mode === 'logical' ? logicalNamesOf(target.database.config, target.table, settings).slots : [];
      },
      ...(options.publishedTotal === undefined ? {} : { publishedTotal: options.publishedTotal }),
      describe: (error) => loaded.redactor.error(error),
    });
    await sampler.start();
  } catch (error) {
    await sampler?.close();
    await Promise.all(own.map((d) => d.close().catch(() => {})));
    await opened.close();
    throw error;
  }
  const handle = createRoutes({
    targets: opened.targets,
    sampler,
    inbox: createInboxRoutes(inboxes, loaded.redactor, replayBrokerOf(loaded)),
    token: options.token,
    boundToLoopback: isLoopback(options.host),
    redactor: loaded.redactor,
    assets,
    intervalMs: sampleIntervalMs,
    rateSource: options.publishedTotal === undefined ? 'sent rows' : 'counters',
  });
  const started = sampler;
  return {
    handle,
    sampleNow: () => started.round(),
    async close() {
      await started.close();
      await Promise.all(own.map((d) => d.close().catch(() => {})));
      await opened.close();
    },
  };
}

/** The RabbitMQ broker a consumer-side dead letter is replayed through: the one configured, if there is exactly one. */
function replayBrokerOf(loaded: LoadedConfig): ReplayBroker {
  const rabbits = Object.entries(loaded.config.brokers).filter(([, broker]) => broker.type === 'rabbitmq');
  if (rabbits.length === 0) return { problem: 'no RabbitMQ broker is configured (brokers:) to replay through' };
  if (rabbits.length > 1) {
    return {
      problem: `several RabbitMQ brokers are configured (${rabbits.map(([name]) => name).join(', ')}): replay from the consumer`,
    };
  }
  const url = (rabbits[0]![1] as { url?: unknown }).url;
  return typeof url === 'string' ? { url } : { problem: `broker ${rabbits[0]![0]} has no url` };
}
