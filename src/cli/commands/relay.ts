import type { Broker } from '../../brokers/broker.js';
import { decorate } from '../../brokers/decorator.js';
import { traceBroker } from '../../brokers/tracing.js';
import { dialectFor } from '../../dialects/index.js';
import { createRelay } from '../../relay/relay.js';
import type { RelayOptions } from '../../relay/options.js';
import { startBacklogGauges } from '../backlog-gauges.js';
import { closeBrokers, openBrokers, routerFor } from '../brokers.js';
import { DEFAULT_MAX_RETAINED_WAL_BYTES, DEFAULT_RETAIN_SENT_MS, relaySettingsFor, type LoadedConfig } from '../config.js';
import { openTargets, type OutboxTarget } from '../context.js';
import { openDashboard } from '../dashboard/dashboard.js';
import { startHealthServer } from '../http-server.js';
import { createLogger, type Logger } from '../logger.js';
import { SidecarMetrics } from '../metrics.js';
import { readinessChecks, readinessReporter, warnUnreachableBrokers } from '../readiness.js';
import { untilStopSignal } from '../stop-signals.js';
import { logicalTables, logRelayEvents, startTableRelays, type TableRelay } from '../table-relay.js';

export interface RelayCommandOptions {
  /** Called once everything runs (tests and embedders wait for it). */
  onReady?: (info: { httpUrl: string | null }) => void;
}

/**
 * Runs one relay per configured table, all publishing through one router to the configured brokers, with the
 * health/metrics endpoint. The first SIGTERM or SIGINT drains (batches in flight finish, the rest give their
 * leases back) and exits 0; a second one exits at once.
 */
export async function relayCommand(loaded: LoadedConfig, options: RelayCommandOptions = {}): Promise<void> {
  const { config, redactor } = loaded;
  const log = createLogger(config.log.level, redactor);
  // Brokers first: their options are checked as they are built, so a config mistake is reported before any connection.
  const brokers = await openBrokers(config, redactor, (name, error) =>
    log.warn({ broker: name, err: error }, 'broker connection error'),
  );
  const opened = await openTargets(loaded, {}, (db, error) =>
    log.warn({ database: db.name, err: error }, 'database connection error (the relay retries)'),
  ).catch(async (error: unknown) => {
    await closeBrokers(brokers);
    throw error;
  });
  for (const db of opened.skipped) {
    log.info({ database: db.name }, `database ${db.name} has only an inbox: nothing to relay there`);
  }
  const router = routerFor(config, brokers);
  const metrics = new SidecarMetrics({ maxTopicsPerTable: config.metrics.maxTopicsPerTable });
  const relays = opened.targets.map((target) => tableRelay(config, target, router, metrics, log));
  const logical = logicalTables(relays);
  const gauges = await startBacklogGauges(relays, logical, metrics, log, config.metrics.backlogIntervalMs);
  // The operator's dashboard (http.dashboard): on the same port as /metrics, reading on pools of its own.
  const dashboard =
    config.http.enabled && config.http.dashboard
      ? await openDashboard(loaded, {
          host: config.http.host,
          token: config.http.dashboardToken ?? null,
          publishedTotal: (labels) => metrics.publishedTotal(labels),
          onError: (error) => log.warn({ err: error }, 'database connection error (dashboard)'),
        })
      : null;
  const http = config.http.enabled
    ? await startHealthServer({
        host: config.http.host,
        port: config.http.port,
        registry: metrics.registry,
        checks: readinessChecks(opened.databases, brokers, logical),
        describe: (error) => redactor.error(error),
        ...(dashboard === null ? {} : { handle: dashboard.handle }),
        onChecked: readinessReporter(metrics, log),
      })
    : null;

  const shutdown = async () => {
    gauges.stop();
    await Promise.all(relays.map(({ relay, drainMs }) => relay.stop({ drainMs })));
    await http?.close();
    await dashboard?.close();
    await closeBrokers(brokers);
    await gauges.close();
    await opened.close();
  };
  await startTableRelays(relays).catch(async (error: unknown) => {
    await shutdown();
    throw error;
  });
  warnUnreachableBrokers(brokers, log, redactor);
  const stopped = untilStopSignal(log, shutdown);
  log.info(
    { tables: relays.map(({ target }) => target.label), brokers: [...brokers.keys()], http: http?.url ?? null },
    `relaying ${relays.length} table(s)${http === null ? '' : `; metrics and health on ${http.url}`}`,
  );
  options.onReady?.({ httpUrl: http?.url ?? null });
  await stopped;
}

/** The relay of one table, with its settings from the config, publishing through `router` timed and traced. */
function tableRelay(
  config: LoadedConfig['config'],
  target: OutboxTarget,
  router: Broker,
  metrics: SidecarMetrics,
  log: Logger,
): TableRelay {
  const settings = relaySettingsFor(config, target.table);
  const { drainMs = 10_000, maxRetainedWalBytes = DEFAULT_MAX_RETAINED_WAL_BYTES, ...relayOptions } = settings;
  const { dialect, url, listen } = target.database.config;
  const schema = target.table.schema ?? target.database.config.schema;
  const logical = settings.mode === 'logical';
  const options: RelayOptions = {
    ...(relayOptions as Partial<RelayOptions>),
    db: target.database.db,
    dialect,
    table: target.table.table,
    ...(schema === undefined ? {} : { schema }),
    broker: decorate(router, metrics.publishTiming(target.labels), traceBroker),
    // The logical relay deletes rows as it marks them unless told to keep them: its throughput was measured so.
    retainSentMs: relayOptions.retainSentMs ?? (logical ? 0 : DEFAULT_RETAIN_SENT_MS),
    // The slot is streamed over a replication connection to the same database, as the same user.
    ...(logical ? { replication: url } : dialectFor(dialect).commitWakeups && listen ? { listen: url } : {}),
  };
  const relay = logical ? createRelay({ ...options, mode: 'logical' }) : createRelay(options);
  metrics.watch(relay, target.labels);
  metrics.declareTopics(target.labels, target.table.topics ?? []);
  logRelayEvents(relay, target, log);
  return { relay, target, drainMs, maxRetainedWalBytes };
}
