import { sql } from 'kysely';
import { kyselyExecutor } from '../../dialects/executor.js';
import type { InboxDeadLetter } from '../../dedupe/message.js';
import type { InboxNames, InboxStore } from '../../dialects/inbox-store.js';
import type { OpenDatabase } from '../databases.js';
import type { Redactor } from '../redact.js';
import { inboxConfirmPage, inboxDonePage, inboxPage, inboxShowPage } from './inbox-pages.js';
import type { PageFrame, Section } from './layout.js';
import { replayable, replayToRabbitMq } from './inbox-replay.js';
import { param } from './request.js';
import { CONFIRM_LIMIT, HttpProblem, PAGE_SIZE, type Answer } from './answer.js';

/** One configured consumer inbox, on an open database. */
export interface InboxSource {
  /** `database/schema.table`. */
  label: string;
  database: OpenDatabase;
  names: InboxNames;
  store: InboxStore;
}

export interface InboxRoutes {
  handles(path: string): { get: boolean; post: boolean };
  get(path: string, params: URLSearchParams, frame: (section: Section, title: string) => PageFrame): Promise<Answer>;
  post(path: string, form: URLSearchParams, frame: (section: Section, title: string) => PageFrame): Promise<Answer>;
}

const GETS = new Set(['/inbox', '/inbox/show', '/inbox/confirm']);
const POSTS = new Set(['/inbox/delete', '/inbox/replay']);
const SEQ = /^[1-9]\d{0,18}$/;

/** Processed messages per consumer, read from the inbox's primary key (consumer, message id). */
async function processedCounts(source: InboxSource): Promise<{ consumer: string; processed: number }[]> {
  const { names } = source;
  const table = names.schema === null ? sql.id(names.table) : sql.id(names.schema, names.table);
  const { rows } = await sql<{ consumer: string | Buffer; n: number | string }>`
    SELECT consumer, COUNT(*) AS n FROM ${table} GROUP BY consumer ORDER BY consumer LIMIT 1000`.execute(source.database.db);
  return rows.map((row) => ({ consumer: String(row.consumer), processed: Number(row.n) }));
}

/** The inbox pages: processed counts, consumer-side dead letters, and deleting them (with the token). */
/** Where a replay is published: the configured RabbitMQ broker, or why there is none to use. */
export type ReplayBroker = { url: string } | { problem: string };

export function createInboxRoutes(sources: readonly InboxSource[], redactor: Redactor, replayBroker: ReplayBroker): InboxRoutes {
  const clean = (text: string) => redactor.text(text);
  const sourceOf = (label: string | undefined): InboxSource => {
    if (sources.length === 0) throw new HttpProblem(404, 'No inboxes', 'No database of this configuration declares an inbox.');
    if (label === undefined) return sources[0]!;
    const found = sources.find((s) => s.label === label);
    if (found === undefined) throw new HttpProblem(404, 'No such inbox', `No configured inbox is named ${label}.`);
    return found;
  };
  const run = (source: InboxSource) => kyselyExecutor(source.database.db);
  const lettersBySeq = async (source: InboxSource, seqs: readonly string[]) => {
    const letters: InboxDeadLetter[] = [];
    for (const seq of seqs) {
      const letter = await source.store.getDead(run(source), source.names, seq, false);
      if (letter !== null) letters.push(letter);
    }
    return letters;
  };

  return {
    handles: (path) => ({ get: GETS.has(path), post: POSTS.has(path) }),

    async get(path, params, frame) {
      const source = sourceOf(param(params, 'inbox'));
      const labels = sources.map((s) => s.label);
      if (path === '/inbox') {
        const consumer = param(params, 'consumer') ?? null;
        const after = param(params, 'after');
        if (after !== undefined && !SEQ.test(after)) throw new HttpProblem(400, 'Bad page', 'after must be a seq.');
        const letters = await source.store.listDead(run(source), source.names, {
          consumer,
          afterSeq: after ?? null,
          limit: PAGE_SIZE + 1,
        });
        return {
          status: 200,
          page: inboxPage(frame('inbox', 'Inboxes'), {
            inboxes: labels,
            inbox: source.label,
            consumer,
            processed: await processedCounts(source),
            letters: letters.slice(0, PAGE_SIZE),
            nextAfter: letters.length > PAGE_SIZE ? letters[PAGE_SIZE - 1]!.seq : null,
            paged: after !== undefined,
            now: new Date(),
            clean,
          }),
        };
      }
      if (path === '/inbox/show') {
        const seq = param(params, 'seq');
        if (seq === undefined || !SEQ.test(seq)) throw new HttpProblem(400, 'Which dead letter?', 'Give its seq.');
        const letter = await source.store.getDead(run(source), source.names, seq, false);
        if (letter === null) throw new HttpProblem(404, 'No such dead letter', `${source.label} has no dead letter ${seq}.`);
        return {
          status: 200,
          page: inboxShowPage(frame('inbox', `Inbox dead letter ${seq}`), source.label, letter, new Date(), clean),
        };
      }
      // /inbox/confirm
      if (frame('inbox', '').canWrite === false) {
        throw new HttpProblem(
          403,
          'Read-only',
          'This dashboard is read-only: set http.dashboardToken to enable replay and delete.',
        );
      }
      const action = param(params, 'do');
      if (action !== 'replay' && action !== 'delete') throw new HttpProblem(400, 'Which action?', 'Choose replay or delete.');
      const seqs = params.getAll('seq').filter((s) => SEQ.test(s));
      if (seqs.length === 0) throw new HttpProblem(400, 'Nothing selected', 'Tick the dead letters first.');
      if (seqs.length > CONFIRM_LIMIT) throw new HttpProblem(400, 'Too many', `Select at most ${CONFIRM_LIMIT} at a time.`);
      const letters = await lettersBySeq(source, seqs);
      const refusals = new Map<string, string>();
      if (action === 'replay') {
        for (const letter of letters) {
          const why = 'problem' in replayBroker ? replayBroker.problem : replayable(letter);
          if (why !== null) refusals.set(letter.seq, why);
        }
      }
      return {
        status: 200,
        page: inboxConfirmPage(frame('inbox', `Confirm ${action}`), {
          inbox: source.label,
          action,
          letters,
          refusals,
          now: new Date(),
          clean,
        }),
      };
    },

    async post(path, form, frame) {
      const source = sourceOf(param(form, 'inbox'));
      const seqs = form.getAll('seq');
      if (seqs.length === 0 || seqs.length > CONFIRM_LIMIT || !seqs.every((s) => SEQ.test(s))) {
        throw new HttpProblem(400, 'Which dead letters?', `Confirm between 1 and ${CONFIRM_LIMIT} dead letters by seq.`);
      }
      if (path === '/inbox/delete') {
        let deleted = 0;
        for (const seq of seqs) if (await source.store.deleteDead(run(source), source.names, seq)) deleted++;
        return { status: 200, page: inboxDonePage(frame('inbox', 'Deleted'), source.label, 'delete', seqs.length, deleted, []) };
      }
      // Replay: published to its queue and confirmed by RabbitMQ first, then deleted. A failure in between leaves the
      // dead letter in place with the copy sent, which the consumer's inbox drops as a duplicate if it is replayed again.
      if ('problem' in replayBroker) throw new HttpProblem(409, 'Cannot replay', replayBroker.problem);
      let replayed = 0;
      const failures: string[] = [];
      for (const letter of await lettersBySeq(source, seqs)) {
        const why = replayable(letter);
        if (why !== null) {
          failures.push(`${letter.seq}: ${why}`);
          continue;
        }
        try {
          await replayToRabbitMq(replayBroker.url, letter);
        } catch (error) {
          failures.push(`${letter.seq}: ${redactor.error(error)}`);
          continue;
        }
        await source.store.deleteDead(run(source), source.names, letter.seq);
        replayed++;
      }
      return {
        status: failures.length > 0 && replayed === 0 ? 502 : 200,
        page: inboxDonePage(frame('inbox', 'Replayed'), source.label, 'replay', seqs.length, replayed, failures),
      };
    },
  };
}
