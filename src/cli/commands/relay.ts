import { LogicalRelay } from '../../relay/logical/logical-relay.js';
import { LogicalDecodingUnavailableError } from '../../relay/logical/slots.js';
import { createRelay, type Relay } from '../../relay/relay.js';
import type { RelayOptions } from '../../relay/options.js';
import { traceBroker } from '../../relay/tracing.js';
import { closeBrokers, openBrokers, RoutingBroker } from '../brokers.js';
import { DEFAULT_MAX_RETAINED_WAL_BYTES, DEFAULT_RETAIN_SENT_MS, relaySettingsFor, type LoadedConfig } from '../config.js';
import { openTargets, type OutboxTarget } from '../context.js';
import { openDashboard } from '../dashboard/dashboard.js';
import { CliError, EXIT } from '../errors.js';
import { startHealthServer, type ReadinessCheck } from '../http-server.js';
import { createLogger } from '../logger.js';
import { SidecarMetrics } from '../metrics.js';
import { slotReadiness } from '../slot-readiness.js';
import { watchSlots } from '../slot-watch.js';
import { openStatusScans } from '../status-scans.js';

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
  const router = new RoutingBroker(config.routes, brokers);
  const metrics = new SidecarMetrics({ maxTopicsPerTable: config.metrics.maxTopicsPerTable });
  const relays: { relay: Relay | LogicalRelay; target: OutboxTarget; drainMs: number; maxRetainedWalBytes: number }[] = [];

  for (const target of opened.targets) {
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
      broker: traceBroker(metrics.timeBroker(router, target.labels)),
      // The logical relay deletes rows as it marks them and runs no cleanup: it keeps no sent rows.
      retainSentMs: relayOptions.retainSentMs ?? (logical ? 0 : DEFAULT_RETAIN_SENT_MS),
      // The slot is streamed over a replication connection to the same database, as the same user.
      ...(logical ? { replication: url } : dialect === 'postgres' && listen ? { listen: url } : {}),
    };
    const relay = logical ? createRelay({ ...options, mode: 'logical' }) : createRelay(options);
    const where = { database: target.database.config.name, table: target.labels.table };
    metrics.watch(relay, target.labels);
    metrics.declareTopics(target.labels, target.table.topics ?? []);
    relay.on('published', (messages) => {
      if (log.isLevelEnabled('debug')) {
        for (const m of messages)
          log.debug({ ...where, topic: m.topic, messageId: m.id, key: m.key, attempt: m.attempt }, 'published');
      }
    });
    relay.on('retrying', (messages) => {
      for (const { message: m, error, delayMs } of messages) {
        log.warn(
          { ...where, topic: m.topic, messageId: m.id, key: m.key, attempt: m.attempt, delayMs, error },
          'publish failed; will retry',
        );
      }
    });
    relay.on('dead', (messages) => {
      for (const { message: m, error } of messages) {
        log.error(
          { ...where, topic: m.topic, messageId: m.id, key: m.key, attempt: m.attempt, error },
          'dead-lettered (txoutbox dead list)',
        );
      }
    });
    relay.on('error', (error) => log.error({ ...where, err: error }, 'relay error (it keeps going)'));
    if (relay instanceof LogicalRelay) {
      relay.on('owned', (slot, owned) =>
        log.info({ ...where, slot }, owned ? `streaming from slot ${slot}` : `no longer streaming from slot ${slot}`),
      );
    }
    relays.push({ relay, target, drainMs, maxRetainedWalBytes });
  }

  // Backlog gauges (and the slots of logical tables): read on a small pool of their own, one table at a time, never
  // two rounds at once.
  const logicalOf = new Map(
    relays.flatMap((r) => (r.relay instanceof LogicalRelay ? [[r.target, { ...r, relay: r.relay }] as const] : [])),
  );
  const scans = await openStatusScans(
    relays.map(({ target }) => target),
    (target, status) => metrics.record(target.labels, status),
    (target, database, error) =>
      target === null
        ? log.warn({ database: database.name, err: error }, 'database connection error (status reads)')
        : log.warn({ database: target.labels.database, table: target.labels.table, err: error }, 'reading the backlog failed'),
    watchSlots(logicalOf, metrics, log),
  );
  await scans.scan();
  const backlogTimer = setInterval(() => void scans.scan(), config.metrics.backlogIntervalMs);
  backlogTimer.unref();

  const checks: ReadinessCheck[] = [
    ...opened.databases.map((d): ReadinessCheck => ({ kind: 'database', name: d.config.name, check: () => d.ping(2000) })),
    ...[...brokers.values()].map((b): ReadinessCheck => ({ kind: 'broker', name: b.name, check: () => b.probe(2000) })),
    ...[...logicalOf.values()].map(({ relay, target }) => slotReadiness(target.label, relay, target.database.db, 2000)),
  ];
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
  let lastReady = new Map<string, boolean>();
  const http = config.http.enabled
    ? await startHealthServer({
        host: config.http.host,
        port: config.http.port,
        registry: metrics.registry,
        checks,
        describe: (error) => redactor.error(error),
        ...(dashboard === null ? {} : { handle: dashboard.handle }),
        onChecked: (results) => {
          const now = new Map<string, boolean>();
          for (const r of results) {
            const id = `${r.kind} ${r.name}`;
            now.set(id, r.ok);
            metrics.up.set({ kind: r.kind, name: r.name }, r.ok ? 1 : 0);
            if (lastReady.get(id) !== r.ok) {
              if (r.kind === 'slot') {
                if (r.ok) log.info({ table: r.name }, `${r.name}: ready, this relay streams its slot`);
                else log.warn({ table: r.name, error: r.error }, `${r.name}: not ready, this relay streams no slot of it`);
              } else if (r.ok) log.info({ [r.kind]: r.name }, `${r.kind} ${r.name} is reachable`);
              else log.warn({ [r.kind]: r.name, error: r.error }, `${r.kind} ${r.name} is unreachable`);
            }
          }
          lastReady = now;
        },
      })
    : null;

  const shutdown = async () => {
    clearInterval(backlogTimer);
    await Promise.all(relays.map(({ relay, drainMs }) => relay.stop({ drainMs })));
    await http?.close();
    await dashboard?.close();
    await closeBrokers(brokers);
    await scans.close();
    await opened.close();
  };
  try {
    // A logical relay resolves once it runs, and rejects when the server cannot decode its WAL.
    for (const { relay, target } of relays) {
      await Promise.resolve(relay.start()).catch((error: unknown) => {
        if (!(error instanceof LogicalDecodingUnavailableError)) throw error;
        throw new CliError(`${target.label}: ${error.message}`, EXIT.failure, { cause: error });
      });
    }
  } catch (error) {
    await shutdown();
    throw error;
  }
  for (const broker of brokers.values()) {
    broker
      .probe(2000)
      .catch((error: unknown) =>
        log.warn(
          { broker: broker.name, error: redactor.error(error) },
          'broker not reachable yet; messages wait in the outbox until it is',
        ),
      );
  }
  // Handlers before the ready line: whoever waits for that line may signal at once, and an unhandled SIGTERM kills
  // the process without draining.
  const stopped = new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now without draining');
        process.exit(signal === 'SIGINT' ? 130 : 143);
      }
      stopping = true;
      log.info({ signal }, 'draining: finishing batches in flight, then exiting (send the signal again to exit at once)');
      void (async () => {
        await shutdown();
        log.info('stopped cleanly');
        resolve();
      })();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  log.info(
    { tables: relays.map(({ target }) => target.label), brokers: [...brokers.keys()], http: http?.url ?? null },
    `relaying ${relays.length} table(s)${http === null ? '' : `; metrics and health on ${http.url}`}`,
  );
  options.onReady?.({ httpUrl: http?.url ?? null });

  await stopped;
}
