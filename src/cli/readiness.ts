import type { OpenBroker } from './brokers.js';
import type { OpenDatabase } from './databases.js';
import type { CheckResult, ReadinessCheck } from './http-server.js';
import type { Logger } from './logger.js';
import type { SidecarMetrics } from './metrics.js';
import type { Redactor } from './redact.js';
import { slotReadiness } from './slot-readiness.js';
import type { LogicalTables } from './table-relay.js';

/** How long one readiness check may take. */
const CHECK_TIMEOUT_MS = 2000;

/** What /readyz checks: every database answers, every broker is reachable, every logical table has a slot here. */
export function readinessChecks(
  databases: readonly OpenDatabase[],
  brokers: ReadonlyMap<string, OpenBroker>,
  logical: LogicalTables,
): ReadinessCheck[] {
  return [
    ...databases.map((d): ReadinessCheck => ({ kind: 'database', name: d.config.name, check: () => d.ping(CHECK_TIMEOUT_MS) })),
    ...[...brokers.values()].map((b): ReadinessCheck => ({
      kind: 'broker',
      name: b.name,
      check: () => b.probe(CHECK_TIMEOUT_MS),
    })),
    ...[...logical.values()].map(({ relay, target }) => slotReadiness(target.label, relay, target.database.db, CHECK_TIMEOUT_MS)),
  ];
}

/** Sets txoutbox_ready from each round of checks, and logs a dependency only when its state changes. */
export function readinessReporter(metrics: SidecarMetrics, log: Logger): (results: CheckResult[]) => void {
  let lastReady = new Map<string, boolean>();
  return (results) => {
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
  };
}

/** Probes every broker once, in the background, and warns about those not reachable yet (the relay waits for them). */
export function warnUnreachableBrokers(brokers: ReadonlyMap<string, OpenBroker>, log: Logger, redactor: Redactor): void {
  for (const broker of brokers.values()) {
    broker
      .probe(CHECK_TIMEOUT_MS)
      .catch((error: unknown) =>
        log.warn(
          { broker: broker.name, error: redactor.error(error) },
          'broker not reachable yet; messages wait in the outbox until it is',
        ),
      );
  }
}
