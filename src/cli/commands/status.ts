import type { LoadedConfig } from '../config.js';
import { openTargets } from '../context.js';
import { formatAge, table } from '../format.js';

export interface StatusCommandOptions {
  database?: string;
  json?: boolean;
  out: (line: string) => void;
}

/** Per database, table and topic: pending, oldest pending age, in flight, dead, sent in the last minute. */
export async function statusCommand(loaded: LoadedConfig, options: StatusCommandOptions): Promise<void> {
  const opened = await openTargets(loaded, options.database === undefined ? {} : { database: options.database }, () => {});
  try {
    const report = [];
    for (const target of opened.targets) {
      const status = await target.admin.status();
      const topics = new Map(status.topics.map((t) => [t.topic, t]));
      for (const topic of target.table.topics ?? []) {
        if (!topics.has(topic)) {
          topics.set(topic, {
            topic,
            pending: 0,
            oldestPendingAt: null,
            inFlight: 0,
            expiredLeases: 0,
            dead: 0,
            sentLastMinute: 0,
          });
        }
      }
      for (const t of [...topics.values()].sort((a, b) => a.topic.localeCompare(b.topic))) {
        report.push({
          database: target.labels.database,
          table: target.labels.table,
          topic: t.topic,
          pending: t.pending,
          oldestPendingAgeSeconds:
            t.oldestPendingAt === null ? null : Math.max(0, (status.now.getTime() - t.oldestPendingAt.getTime()) / 1000),
          inFlight: t.inFlight,
          expiredLeases: t.expiredLeases,
          dead: t.dead,
          sentLastMinute: t.sentLastMinute,
        });
      }
    }
    if (options.json) {
      options.out(JSON.stringify({ tables: report }, null, 2));
      return;
    }
    if (report.length === 0) {
      options.out('Every outbox table is empty.');
      return;
    }
    options.out(
      table(
        ['DATABASE', 'TABLE', 'TOPIC', 'PENDING', 'OLDEST', 'IN FLIGHT', 'DEAD', 'SENT/1M'],
        report.map((r) => [
          r.database,
          r.table,
          r.topic,
          String(r.pending),
          formatAge(r.oldestPendingAgeSeconds),
          r.expiredLeases > 0 ? `${r.inFlight} (+${r.expiredLeases} expired)` : String(r.inFlight),
          String(r.dead),
          String(r.sentLastMinute),
        ]),
      ),
    );
    const dead = report.reduce((n, r) => n + r.dead, 0);
    if (dead > 0) options.out(`\n${dead} dead letter(s): see them with \`txoutbox dead list\`.`);
  } finally {
    await opened.close();
  }
}
