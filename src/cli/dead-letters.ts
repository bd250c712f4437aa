import type { DeadLetterFilter, DeadLetterRow } from '../dialects/admin.js';
import type { OutboxTarget } from './context.js';
import { CliError, EXIT } from './errors.js';
import { parseDuration } from './format.js';

/**
 * Dead letters as people select and act on them: the CLI's `dead` commands and the dashboard go through these, so
 * both choose the same rows and keep per-key order the same way.
 */

/** Rows per statement when reading or acting on dead letters (each page of an action is one transaction). */
export const DEAD_PAGE = 500;

/** A person's selection, as typed: durations as text (`30s`, `2h`), ids as given. */
export interface DeadSelectionOptions {
  database?: string;
  table?: string;
  topic?: string;
  key?: string;
  error?: string;
  olderThan?: string;
  newerThan?: string;
  id?: string[];
}

/** The store's filter for a selection; a malformed duration is a CliError (exit 2). */
export function deadFilterOf(options: DeadSelectionOptions): DeadLetterFilter {
  const filter: DeadLetterFilter = {};
  try {
    if (options.topic !== undefined) filter.topic = options.topic;
    if (options.key !== undefined) filter.key = options.key;
    if (options.error !== undefined) filter.error = options.error;
    if (options.olderThan !== undefined) filter.olderThanMs = parseDuration(options.olderThan);
    if (options.newerThan !== undefined) filter.newerThanMs = parseDuration(options.newerThan);
  } catch (error) {
    throw new CliError((error as Error).message, EXIT.config);
  }
  if (options.id !== undefined && options.id.length > 0) filter.ids = options.id;
  return filter;
}

/** Every matching dead letter of a target, page by page (by seq, so acting on rows never skips any). */
export async function* matchingDead(
  target: OutboxTarget,
  filter: DeadLetterFilter,
  limit = Infinity,
): AsyncGenerator<DeadLetterRow[]> {
  let after: string | undefined;
  let seen = 0;
  while (seen < limit) {
    const page = await target.admin.listDead(filter, Math.min(DEAD_PAGE, limit - seen), after);
    if (page.length === 0) return;
    seen += page.length;
    after = page[page.length - 1]!.seq;
    yield page;
    if (page.length < DEAD_PAGE) return;
  }
}

/**
 * The seqs of the matching dead letters of a target (at most `limit`), page by page, without reading payloads:
 * the exact set a person confirms. Dead letters that match later are left alone.
 */
export async function confirmedDeadSet(target: OutboxTarget, filter: DeadLetterFilter, limit = Infinity): Promise<string[]> {
  const seqs: string[] = [];
  while (seqs.length < limit) {
    const want = Math.min(DEAD_PAGE, limit - seqs.length);
    const page = await target.admin.deadSeqs(filter, want, seqs[seqs.length - 1]);
    seqs.push(...page);
    if (page.length < want) break;
  }
  return seqs;
}

/**
 * Retries or discards exactly these dead letters of a target, a page per transaction, through the store's own
 * statements (key locks, heads, logical re-inserts). A row no longer dead (acted on meanwhile) is skipped by the
 * store. Returns how many rows changed: in logical mode a retry also brings back messages parked behind a chosen one.
 */
export async function actOnDead(
  target: OutboxTarget,
  action: 'retry' | 'discard',
  seqs: readonly string[],
  onProgress?: (done: number) => void,
): Promise<number> {
  let done = 0;
  for (let start = 0; start < seqs.length; start += DEAD_PAGE) {
    const page = seqs.slice(start, start + DEAD_PAGE);
    done += action === 'retry' ? await target.admin.retryDead(page) : await target.admin.discardDead(page);
    onProgress?.(done);
  }
  return done;
}
