import type { IncomingMessage, ServerResponse } from 'node:http';
import type { OutboxTarget } from '../context.js';
import { actOnDead, deadFilterOf } from '../dead-letters.js';
import { CliError } from '../errors.js';
import type { Redactor } from '../redact.js';
import { CONFIRM_LIMIT, HttpProblem, PAGE_SIZE, type Answer } from './answer.js';
import type { Asset } from './assets.js';
import { blockedPage } from './blocked-page.js';
import { deadConfirmPage, deadDonePage, deadListPage, deadShowPage, type DeadFilterForm } from './dead-pages.js';
import { hostAllowed, sameOrigin, SECURITY_HEADERS, tokenMatches } from './guard.js';
import type { InboxRoutes } from './inbox-routes.js';
import type { PageFrame, Section } from './layout.js';
import { messagePage } from './message-page.js';
import { overviewFragment, overviewPage, type OverviewData } from './overview-page.js';
import { BodyTooLarge, param, readForm } from './request.js';
import { nameOf, type DashboardSampler } from './sampler.js';

export interface RouteDeps {
  targets: readonly OutboxTarget[];
  sampler: DashboardSampler;
  inbox: InboxRoutes;
  /** Null: read-only, no write buttons, and every write is refused. */
  token: string | null;
  boundToLoopback: boolean;
  redactor: Redactor;
  assets: ReadonlyMap<string, Asset>;
  intervalMs: number;
  rateSource: OverviewData['rateSource'];
}

const GET_PAGES = new Set(['/', '/dead', '/dead/show', '/dead/confirm', '/blocked', '/fragment/overview', '/api/rates']);
const WRITES = new Set(['/dead/retry', '/dead/discard']);

/**
 * The dashboard's request handler: answers its own paths (and says false for any other, so the relay's server can
 * serve /metrics and the probes next to it).
 */
export function createRoutes(deps: RouteDeps): (request: IncomingMessage, response: ServerResponse) => boolean {
  const frame = (section: Section, title: string): PageFrame => ({ section, title, canWrite: deps.token !== null });
  const clean = (text: string) => deps.redactor.text(text);
  const tableNames = deps.targets.map(nameOf);

  const targetOf = (name: string | undefined): OutboxTarget => {
    if (deps.targets.length === 0) throw new HttpProblem(404, 'No outbox tables', 'This configuration has no outbox tables.');
    if (name === undefined) {
      // The first table with dead letters at the last reading, else the first table.
      const withDead = deps.sampler.tables().find((r) => (r.status?.topics ?? []).some((t) => t.dead > 0));
      return withDead?.target ?? deps.targets[0]!;
    }
    const found = deps.targets.find((t) => nameOf(t) === name);
    if (found === undefined) throw new HttpProblem(404, 'No such table', `No configured outbox table is named ${name}.`);
    return found;
  };

  const filtersOf = (params: URLSearchParams): DeadFilterForm => {
    const filters: DeadFilterForm = {};
    for (const name of ['topic', 'key', 'error', 'olderThan', 'newerThan'] as const) {
      const value = param(params, name);
      if (value !== undefined) filters[name] = value;
    }
    return filters;
  };

  const storeFilter = (filters: DeadFilterForm, ids?: string[]) => {
    try {
      return deadFilterOf({ ...filters, ...(ids === undefined ? {} : { id: ids }) });
    } catch (error) {
      throw new HttpProblem(400, 'Bad filter', error instanceof CliError ? error.message : String(error));
    }
  };

  const seqAfter = (params: URLSearchParams) => {
    const after = param(params, 'after');
    if (after !== undefined && !/^\d{1,19}$/.test(after)) throw new HttpProblem(400, 'Bad page', 'after must be a seq.');
    return after;
  };

  const overviewData = (): OverviewData => ({
    tables: deps.sampler.tables(),
    relays: deps.sampler.relaysSeen(),
    intervalMs: deps.intervalMs,
    rateSource: deps.rateSource,
    now: new Date(),
  });

  async function get(path: string, params: URLSearchParams): Promise<Answer> {
    switch (path) {
      case '/':
        return { status: 200, page: overviewPage(frame('overview', 'Overview'), overviewData()) };
      case '/fragment/overview':
        return { status: 200, page: overviewFragment(overviewData()) };
      case '/api/rates':
        return { status: 200, json: deps.sampler.series() };
      case '/dead': {
        const target = targetOf(param(params, 'table'));
        const filters = filtersOf(params);
        const after = seqAfter(params);
        const rows = await target.admin.listDead(storeFilter(filters), PAGE_SIZE + 1, after);
        const reading = deps.sampler.tables().find((r) => r.target === target);
        return {
          status: 200,
          page: deadListPage(frame('dead', 'Dead letters'), {
            tables: tableNames,
            table: nameOf(target),
            filters,
            rows: rows.slice(0, PAGE_SIZE),
            deadInTable: reading?.status?.topics.reduce((n, t) => n + t.dead, 0) ?? null,
            nextAfter: rows.length > PAGE_SIZE ? rows[PAGE_SIZE - 1]!.seq : null,
            paged: after !== undefined,
            now: new Date(),
            clean,
          }),
        };
      }
      case '/dead/show': {
        const target = targetOf(param(params, 'table'));
        const id = param(params, 'id');
        if (id === undefined) throw new HttpProblem(400, 'Which dead letter?', 'Give its id.');
        const [row] = await target.admin.listDead({ ids: [id] }, 1);
        if (row === undefined) throw new HttpProblem(404, 'No such dead letter', `${nameOf(target)} has no dead letter ${id}.`);
        return {
          status: 200,
          page: deadShowPage(frame('dead', `Dead letter ${id}`), { table: nameOf(target), row, now: new Date(), clean }),
        };
      }
      case '/dead/confirm': {
        if (deps.token === null) throw readOnly();
        const target = targetOf(param(params, 'table'));
        const [action, scope] = (param(params, 'do') ?? '').split(':');
        if ((action !== 'retry' && action !== 'discard') || (scope !== 'selected' && scope !== 'matching')) {
          throw new HttpProblem(400, 'Which action?', 'Choose retry or discard, of the selected rows or of every match.');
        }
        const ids = params.getAll('id').filter((id) => id !== '');
        if (scope === 'selected' && ids.length === 0) {
          throw new HttpProblem(400, 'Nothing selected', 'Tick the dead letters to act on first.');
        }
        if (ids.length > CONFIRM_LIMIT) throw new HttpProblem(400, 'Too many', `Select at most ${CONFIRM_LIMIT} at a time.`);
        // The rows named here are the rows acted on: the form that follows carries their seqs and nothing else.
        const filter = scope === 'selected' ? { ids } : storeFilter(filtersOf(params));
        const rows = await target.admin.listDead(filter, CONFIRM_LIMIT + 1);
        return {
          status: 200,
          page: deadConfirmPage(frame('dead', `Confirm ${action}`), {
            table: nameOf(target),
            action,
            rows: rows.slice(0, CONFIRM_LIMIT),
            more: rows.length > CONFIRM_LIMIT,
            limit: CONFIRM_LIMIT,
            now: new Date(),
            clean,
          }),
        };
      }
      case '/blocked': {
        const target = targetOf(param(params, 'table'));
        const after = seqAfter(params);
        const keys = await target.admin.blockedKeys(PAGE_SIZE + 1, after);
        return {
          status: 200,
          page: blockedPage(frame('blocked', 'Blocked keys'), {
            tables: tableNames,
            table: nameOf(target),
            keys: keys.slice(0, PAGE_SIZE),
            nextAfter: keys.length > PAGE_SIZE ? keys[PAGE_SIZE - 1]!.head.seq : null,
            paged: after !== undefined,
            now: new Date(),
            clean,
          }),
        };
      }
    }
    throw new HttpProblem(404, 'Not found', `Nothing at ${path}.`);
  }

  function readOnly() {
    return new HttpProblem(
      403,
      'Read-only',
      'This dashboard is read-only: set http.dashboardToken to enable retry, discard, replay and delete.',
    );
  }

  /** Token and origin, before anything is read from the body's rows. */
  function authorize(request: IncomingMessage, form: URLSearchParams): void {
    if (deps.token === null) throw readOnly();
    if (!sameOrigin(request)) {
      throw new HttpProblem(
        403,
        'Refused',
        "Writes are accepted only from the dashboard's own pages (cross-site request refused).",
      );
    }
    const given = request.headers['x-txoutbox-token'];
    if (!tokenMatches(deps.token, (Array.isArray(given) ? given[0] : given) ?? param(form, 'token'))) {
      throw new HttpProblem(403, 'Refused', 'Wrong or missing token: nothing was changed.');
    }
  }

  async function post(path: string, request: IncomingMessage): Promise<Answer> {
    let form: URLSearchParams;
    try {
      form = await readForm(request);
    } catch (error) {
      if (error instanceof BodyTooLarge) throw new HttpProblem(413, 'Too large', error.message);
      throw error;
    }
    authorize(request, form);
    if (path === '/dead/retry' || path === '/dead/discard') {
      const action = path === '/dead/retry' ? 'retry' : 'discard';
      const target = targetOf(param(form, 'table'));
      const seqs = form.getAll('seq');
      if (seqs.length === 0 || seqs.length > CONFIRM_LIMIT || !seqs.every((s) => /^\d{1,19}$/.test(s))) {
        throw new HttpProblem(400, 'Which dead letters?', `Confirm between 1 and ${CONFIRM_LIMIT} dead letters by seq.`);
      }
      const done = await actOnDead(target, action, seqs);
      return { status: 200, page: deadDonePage(frame('dead', action), nameOf(target), action, seqs.length, done) };
    }
    return deps.inbox.post(path, form, frame);
  }

  const send = (response: ServerResponse, answer: Answer) => {
    const headers: Record<string, string> = { ...SECURITY_HEADERS };
    let body: string;
    if ('page' in answer) {
      headers['content-type'] = 'text/html; charset=utf-8';
      body = answer.page.text;
    } else if ('json' in answer) {
      headers['content-type'] = 'application/json; charset=utf-8';
      body = JSON.stringify(answer.json);
    } else {
      headers['content-type'] = 'text/plain; charset=utf-8';
      body = answer.text;
    }
    response.writeHead(answer.status, headers);
    response.end(body);
  };

  return (request, response) => {
    const url = new URL(request.url ?? '/', 'http://dashboard.invalid');
    const path = url.pathname;
    if (path === '/favicon.ico') {
      // No icon: an empty answer, rather than a 404 in every browser console.
      response.writeHead(204, SECURITY_HEADERS);
      response.end();
      return true;
    }
    const asset = deps.assets.get(path);
    const inboxPath = deps.inbox.handles(path);
    if (asset === undefined && !GET_PAGES.has(path) && !WRITES.has(path) && !inboxPath.get && !inboxPath.post) return false;
    if (!hostAllowed(request, deps.boundToLoopback)) {
      send(response, { status: 403, text: 'This dashboard answers only requests addressed to 127.0.0.1 or localhost.\n' });
      return true;
    }
    if (asset !== undefined) {
      if (request.method !== 'GET' && request.method !== 'HEAD')
        return (send(response, { status: 405, text: 'GET only\n' }), true);
      response.writeHead(200, { ...SECURITY_HEADERS, 'content-type': asset.type, 'cache-control': 'public, max-age=3600' });
      response.end(request.method === 'HEAD' ? undefined : asset.body);
      return true;
    }
    const isWrite = WRITES.has(path) || inboxPath.post;
    const method = request.method ?? 'GET';
    const work: Promise<Answer> =
      isWrite && method === 'POST'
        ? post(path, request)
        : !isWrite && (method === 'GET' || method === 'HEAD')
          ? inboxPath.get
            ? deps.inbox.get(path, url.searchParams, frame)
            : get(path, url.searchParams)
          : Promise.reject(new HttpProblem(405, 'Method not allowed', isWrite ? 'Writes are POST only.' : 'GET only.'));
    work.then(
      (answer) => send(response, answer),
      (error: unknown) => {
        if (error instanceof HttpProblem) {
          const page = messagePage(frame('overview', error.title), error.title, error.message);
          send(
            response,
            path.startsWith('/api/') ? { status: error.status, json: { error: error.message } } : { status: error.status, page },
          );
          return;
        }
        const text = deps.redactor.error(error);
        send(response, { status: 500, page: messagePage(frame('overview', 'Failed'), 'Failed', text) });
      },
    );
    return true;
  };
}
