import { createInterface } from 'node:readline/promises';
import cliProgress from 'cli-progress';
import type { DeadLetterFilter, DeadLetterRow } from '../../dialects/admin.js';
import type { LoadedConfig } from '../config.js';
import { withTargets, type OutboxTarget } from '../context.js';
import {
  actOnDead,
  confirmedDeadSet,
  DEAD_PAGE,
  deadFilterOf,
  matchingDead,
  type DeadSelectionOptions,
} from '../dead-letters.js';
import { CliError, EXIT } from '../errors.js';
import { formatAge, table, truncate } from '../format.js';
import { visible } from '../visible.js';

export interface DeadIo {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Asks a yes/no question; null when no one can answer (not a terminal). */
  confirm: ((question: string) => Promise<boolean>) | null;
  /** Whether a progress bar can be drawn (stderr is a terminal). */
  progress: boolean;
}

const hasFilter = (filter: DeadLetterFilter) => Object.keys(filter).length > 0;


function describeRow(target: OutboxTarget, row: DeadLetterRow, now: number) {
  return {
    database: target.labels.database,
    table: target.labels.table,
    id: row.id,
    topic: row.topic,
    key: row.key,
    attempts: row.attempts,
    ageSeconds: Math.max(0, (now - row.createdAt.getTime()) / 1000),
    createdAt: row.createdAt.toISOString(),
    holdsKey: row.holdsKey,
    lastError: row.lastError,
  };
}

export async function deadListCommand(
  loaded: LoadedConfig,
  options: DeadSelectionOptions & { limit?: string; json?: boolean },
  io: DeadIo,
): Promise<void> {
  const filter = deadFilterOf(options);
  const limit = options.limit === undefined ? 50 : Number(options.limit);
  if (!Number.isInteger(limit) || limit < 1)
    throw new CliError(`--limit must be a positive integer, got ${options.limit}`, EXIT.config);
  await withTargets(loaded, options, async (targets) => {
    const now = Date.now();
    const rows = [];
    for (const target of targets) {
      for await (const page of matchingDead(target, filter, limit - rows.length))
        rows.push(...page.map((row) => describeRow(target, row, now)));
      if (rows.length >= limit) break;
    }
    if (options.json) return io.out(JSON.stringify({ deadLetters: rows }, null, 2));
    if (rows.length === 0) return io.out('No dead letters match.');
    io.out(
      table(
        ['DATABASE', 'TABLE', 'ID', 'TOPIC', 'KEY', 'ATTEMPTS', 'AGE', 'LAST ERROR'],
        rows.map((r) => [
          r.database,
          r.table,
          r.id,
          r.topic,
          r.key === null ? '-' : `${r.key}${r.holdsKey ? ' (blocked)' : ''}`,
          String(r.attempts),
          formatAge(r.ageSeconds),
          truncate(r.lastError ?? '', 80),
        ]),
      ),
    );
    if (rows.length === limit) io.out(`\n(first ${limit}; raise --limit or narrow with --topic, --key, --error, --older-than)`);
    if (rows.some((r) => r.holdsKey)) io.out('\n(blocked): later messages of that key wait until it is retried or discarded.');
  });
}

export async function deadShowCommand(
  loaded: LoadedConfig,
  id: string,
  options: DeadSelectionOptions & { json?: boolean },
  io: DeadIo,
) {
  await withTargets(loaded, options, async (targets) => {
    const found: { target: OutboxTarget; row: DeadLetterRow }[] = [];
    for (const target of targets) for (const row of await target.admin.listDead({ ids: [id] }, 1)) found.push({ target, row });
    if (found.length === 0) throw new CliError(`No dead letter with id "${id}" (see \`txoutbox dead list\`).`, EXIT.notFound);
    for (const { target, row } of found) {
      const textual = /^(application\/([a-z.+-]*json|xml)|text\/)/i.test(row.contentType);
      const payload = textual ? row.payload.toString('utf8') : row.payload.toString('base64');
      const details = {
        ...describeRow(target, row, Date.now()),
        contentType: row.contentType,
        headers: row.headers,
        payloadEncoding: textual ? 'utf8' : 'base64',
        payload,
      };
      if (options.json) {
        io.out(JSON.stringify(details, null, 2));
        continue;
      }
      io.out(
        [
          `id:          ${details.id}`,
          `where:       ${details.database} ${details.table}`,
          `topic:       ${details.topic}`,
          `key:         ${details.key ?? '-'}${details.holdsKey ? ' (blocked: later messages of this key wait for it)' : ''}`,
          `attempts:    ${details.attempts}`,
          `enqueued:    ${details.createdAt} (${formatAge(details.ageSeconds)} ago)`,
          `last error:  ${details.lastError ?? '-'}`,
          `content:     ${details.contentType}`,
          `headers:     ${JSON.stringify(details.headers)}`,
          `payload (${details.payloadEncoding}):`,
          payload,
        ].join('\n'),
      );
    }
  });
}

/**
 * retry / discard. Ids alone act on those messages; filters (or --all) select many. When more than one message
 * matches, a person confirms first (or passes --yes); long runs show a progress bar.
 */
export async function deadActCommand(
  loaded: LoadedConfig,
  action: 'retry' | 'discard',
  ids: string[],
  options: DeadSelectionOptions & { all?: boolean; yes?: boolean; dryRun?: boolean },
  io: DeadIo,
): Promise<void> {
  const filter = deadFilterOf({ ...options, id: [...ids, ...(options.id ?? [])] });
  if (!hasFilter(filter) && !options.all) {
    throw new CliError(
      `Say which dead letters to ${action}: give ids, filters (--topic, --key, --error, --older-than, --newer-than) or --all.`,
      EXIT.config,
    );
  }
  await withTargets(loaded, options, async (targets) => {
    // The exact set a person confirms (seqs only, no payloads read): dead letters that match later are left alone.
    const plan: { target: OutboxTarget; count: number; seqs: string[] }[] = [];
    for (const target of targets) {
      const seqs = await confirmedDeadSet(target, filter);
      if (seqs.length > 0) plan.push({ target, count: seqs.length, seqs });
    }
    const total = plan.reduce((n, p) => n + p.count, 0);
    if (total === 0) {
      if (filter.ids !== undefined && !options.all)
        throw new CliError(`No dead letter has the id(s) ${filter.ids.join(', ')}.`, EXIT.notFound);
      return io.out(`No dead letters match; nothing to ${action}.`);
    }
    const summary = plan.map((p) => `${p.count} in ${p.target.label}`).join(', ');
    if (options.dryRun) return io.out(`Would ${action} ${total} dead letter(s): ${summary}.`);
    if (total > 1 && !options.yes) {
      if (io.confirm === null) {
        throw new CliError(
          `${total} dead letters match (${summary}). Pass --yes to ${action} them all without a prompt.`,
          EXIT.aborted,
        );
      }
      const what = action === 'retry' ? 'retry (publish again)' : 'discard (delete for good)';
      if (!(await io.confirm(`${what} ${total} dead letters (${summary})? [y/N] `))) {
        throw new CliError('Nothing was changed.', EXIT.aborted);
      }
    }
    const bar =
      io.progress && total > DEAD_PAGE
        ? new cliProgress.SingleBar(
            { format: `${action} [{bar}] {value}/{total}`, stream: process.stderr },
            cliProgress.Presets.shades_classic,
          )
        : null;
    bar?.start(total, 0);
    let done = 0;
    try {
      for (const { target, seqs } of plan) {
        // Page by page, each in one transaction; a row no longer dead (retried meanwhile) is skipped by the store.
        const before = done;
        done += await actOnDead(target, action, seqs, (n) => bar?.update(before + n));
      }
    } finally {
      bar?.stop();
    }
    // In logical mode a retried message brings back the ones parked behind it (block-key): more than were chosen.
    const parked = done > total ? ` (${done - total} of them were waiting behind the ones chosen)` : '';
    io.out(
      action === 'retry'
        ? `Retried ${done} dead letter(s)${parked}: they are pending again and a running relay publishes them (in key order).`
        : `Discarded ${done} dead letter(s); their keys moved on to their next messages.`,
    );
  });
}

/** A terminal prompt on stdin/stderr, or null when stdin is not a terminal. */
export function terminalConfirm(): DeadIo['confirm'] {
  if (!process.stdin.isTTY) return null;
  return async (question) => {
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      return /^y(es)?$/i.test((await rl.question(visible(question))).trim());
    } finally {
      rl.close();
    }
  };
}
