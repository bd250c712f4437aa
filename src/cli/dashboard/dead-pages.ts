import type { DeadLetterRow } from '../../dialects/admin.js';
import { formatAge, truncate } from '../format.js';
import { html, query, type Html } from './html.js';
import { layout, type PageFrame } from './layout.js';
import { messageBody } from './message-body.js';

/** The columns of a list of dead letters, on the list and on the confirmation that names the rows. */
const DEAD_COLUMNS = html`<th>ID</th>
  <th>Topic</th>
  <th>Key</th>
  <th class="num">Attempts</th>
  <th class="num">Age</th>
  <th>Last error</th>`;

/** The dead-letter filters of the page, as typed (the same as the CLI's `dead list` options). */
export interface DeadFilterForm {
  topic?: string;
  key?: string;
  error?: string;
  olderThan?: string;
  newerThan?: string;
}

export interface DeadListData {
  tables: readonly string[];
  table: string;
  filters: DeadFilterForm;
  rows: readonly DeadLetterRow[];
  /** Dead letters of the table at the last reading. */
  deadInTable: number | null;
  /** The seq to page on from, when there are more rows. */
  nextAfter: string | null;
  paged: boolean;
  now: Date;
  /** Redacts a text read from the table (last errors). */
  clean: (text: string) => string;
}

const FILTER_FIELDS: readonly [keyof DeadFilterForm, string, string][] = [
  ['topic', 'Topic', 'orders.*'],
  ['key', 'Key', ''],
  ['error', 'Error text', 'timeout'],
  ['olderThan', 'Older than', '1h'],
  ['newerThan', 'Newer than', '30m'],
];

function tablePicker(tables: readonly string[], chosen: string): Html {
  return html`<label
    >Table
    <select name="table">
      ${tables.map((t) => html`<option value="${t}" ${t === chosen ? html`selected` : ''}>${t}</option>`)}
    </select></label
  >`;
}

const age = (createdAt: Date, now: Date) => formatAge(Math.max(0, (now.getTime() - createdAt.getTime()) / 1000));

function keyCell(row: Pick<DeadLetterRow, 'key' | 'holdsKey'>, table: string): Html {
  if (row.key === null) return html`<span class="muted">-</span>`;
  return html`<span class="mono">${row.key}</span>${
      row.holdsKey
        ? html` <a class="warn" href="/blocked${query({ table })}" title="later messages of this key wait for it">(blocked)</a>`
        : ''
    }`;
}

export function deadListPage(frame: PageFrame, data: DeadListData): Html {
  const { table, filters } = data;
  const hidden = html`<input type="hidden" name="table" value="${table}" />${FILTER_FIELDS.map(([name]) =>
      filters[name] === undefined ? '' : html`<input type="hidden" name="${name}" value="${filters[name]}" />`,
    )}`;
  const filtered = FILTER_FIELDS.some(([name]) => filters[name] !== undefined);
  return layout(
    frame,
    html`<h1>Dead letters</h1>
      <form class="filters" method="get" action="/dead">
        ${tablePicker(data.tables, table)}
        ${FILTER_FIELDS.map(
          ([name, label, placeholder]) =>
            html`<label>${label}<input name="${name}" value="${filters[name] ?? ''}" placeholder="${placeholder}" /></label>`,
        )}
        <button type="submit">Filter</button>
        <a href="/dead${query({ table })}">clear</a>
      </form>
      <p class="muted">
        ${data.deadInTable === null ? '' : html`${data.deadInTable} dead letter(s) in ${table} at the last reading. `}
        ${
          data.rows.length === 0
            ? 'No dead letters match.'
            : html`Showing ${data.rows.length}${filtered ? ' matching' : ''}, oldest first${data.paged ? ' (a later page)' : ''}.`
        }
      </p>
      <form method="get" action="/dead/confirm" id="dead-rows" hx-boost="false">
        ${hidden}
        <table>
          <thead>
            <tr>
              ${
                frame.canWrite
                  ? html`<th><input type="checkbox" data-select-all="id" aria-label="select every row on this page" /></th>`
                  : ''
              }
              ${DEAD_COLUMNS}
            </tr>
          </thead>
          <tbody>
            ${data.rows.map(
              (row) =>
                html`<tr data-id="${row.id}">
                  ${
                    frame.canWrite
                      ? html`<td><input type="checkbox" name="id" value="${row.id}" aria-label="select ${row.id}" /></td>`
                      : ''
                  }
                  <td class="mono"><a href="/dead/show${query({ table, id: row.id })}">${row.id}</a></td>
                  <td class="mono">${row.topic}</td>
                  <td>${keyCell(row, table)}</td>
                  <td class="num">${row.attempts}</td>
                  <td class="num">${age(row.createdAt, data.now)}</td>
                  <td class="error-text">${truncate(data.clean(row.lastError ?? ''), 140)}</td>
                </tr>`,
            )}
          </tbody>
        </table>
        ${
          frame.canWrite && data.rows.length > 0
            ? html`<div class="actions">
                <button type="submit" name="do" value="retry:selected">Retry selected…</button>
                <button type="submit" name="do" value="discard:selected" class="danger">Discard selected…</button>
                <span class="muted">or every match of the filter:</span>
                <button type="submit" name="do" value="retry:matching">Retry all matching…</button>
                <button type="submit" name="do" value="discard:matching" class="danger">Discard all matching…</button>
              </div>`
            : ''
        }
      </form>
      <div class="actions">
        ${data.paged ? html`<a href="/dead${query({ table, ...filters })}">« first page</a>` : ''}
        ${data.nextAfter === null ? '' : html`<a href="/dead${query({ table, ...filters, after: data.nextAfter })}">next page »</a>`}
      </div>`,
  );
}

export interface DeadShowData {
  table: string;
  row: DeadLetterRow;
  now: Date;
  clean: (text: string) => string;
}

export function deadShowPage(frame: PageFrame, { table, row, now, clean }: DeadShowData): Html {
  return layout(
    frame,
    html`<h1>Dead letter <span class="mono">${row.id}</span></h1>
      <dl class="details">
        <dt>Table</dt>
        <dd>${table}</dd>
        <dt>Topic</dt>
        <dd class="mono">${row.topic}</dd>
        <dt>Key</dt>
        <dd>
          ${keyCell(row, table)}${row.holdsKey ? html` <span class="muted">later messages of this key wait for it</span>` : ''}
        </dd>
        <dt>Attempts</dt>
        <dd>${row.attempts}</dd>
        <dt>Enqueued</dt>
        <dd>${row.createdAt.toISOString()} (${age(row.createdAt, now)} ago)</dd>
        <dt>Last error</dt>
        <dd><pre class="error-text" id="last-error">${clean(row.lastError ?? '-')}</pre></dd>
        <dt>Content type</dt>
        <dd class="mono">${row.contentType}</dd>
      </dl>
      ${messageBody(row, 'txoutbox dead show --json has them')}
      ${
        frame.canWrite
          ? html`<form method="get" action="/dead/confirm" class="actions" hx-boost="false">
              <input type="hidden" name="table" value="${table}" />
              <input type="hidden" name="id" value="${row.id}" />
              <button type="submit" name="do" value="retry:selected">Retry…</button>
              <button type="submit" name="do" value="discard:selected" class="danger">Discard…</button>
            </form>`
          : ''
      }
      <p><a href="/dead${query({ table })}">« dead letters of ${table}</a></p>`,
  );
}

export interface DeadConfirmData {
  table: string;
  action: 'retry' | 'discard';
  rows: readonly DeadLetterRow[];
  /** More rows matched than one confirmation takes; these are the oldest. */
  more: boolean;
  limit: number;
  now: Date;
  clean: (text: string) => string;
}

/** Names every row the action will touch; the form carries exactly their seqs, and nothing else is acted on. */
export function deadConfirmPage(frame: PageFrame, data: DeadConfirmData): Html {
  const verb = data.action === 'retry' ? 'Retry' : 'Discard';
  const what =
    data.action === 'retry'
      ? 'They become pending again (attempts back to 0) and a running relay publishes them in key order.'
      : 'They are deleted for good; each key they held moves on to its next message.';
  return layout(
    frame,
    html`<h1>${verb} ${data.rows.length} dead letter(s) of ${data.table}?</h1>
      <p>${what}</p>
      ${
        data.more
          ? html`<p class="notice bad">
              More than ${data.limit} dead letters match: these are the ${data.limit} oldest. Act on them, then again for the rest
              (or use <code>txoutbox dead ${data.action}</code>).
            </p>`
          : ''
      }
      <table id="confirm-rows">
        <thead>
          <tr>
            ${DEAD_COLUMNS}
          </tr>
        </thead>
        <tbody>
          ${data.rows.map(
            (row) =>
              html`<tr data-id="${row.id}">
                <td class="mono">${row.id}</td>
                <td class="mono">${row.topic}</td>
                <td>${keyCell(row, data.table)}</td>
                <td class="num">${row.attempts}</td>
                <td class="num">${age(row.createdAt, data.now)}</td>
                <td class="error-text">${truncate(data.clean(row.lastError ?? ''), 100)}</td>
              </tr>`,
          )}
        </tbody>
      </table>
      ${
        data.rows.length === 0
          ? html`<p class="notice">None of them is a dead letter any more: nothing to ${data.action}.</p>`
          : html`<form method="post" action="/dead/${data.action}" class="actions">
              <input type="hidden" name="table" value="${data.table}" />
              ${data.rows.map((row) => html`<input type="hidden" name="seq" value="${row.seq}" />`)}
              <label>Token <input type="password" name="token" autocomplete="off" required /></label>
              <button type="submit" class="${data.action === 'retry' ? 'primary' : 'danger'}">
                ${verb} these ${data.rows.length}
              </button>
              <a href="/dead${query({ table: data.table })}">cancel</a>
            </form>`
      }`,
  );
}

export function deadDonePage(frame: PageFrame, table: string, action: 'retry' | 'discard', chosen: number, done: number): Html {
  // In logical mode a retry brings back the messages parked behind the chosen ones too.
  const parked = done > chosen ? ` (${done - chosen} of them were waiting behind the ones chosen)` : '';
  const skipped = done < chosen ? ` ${chosen - done} were no longer dead letters and were left alone.` : '';
  return layout(
    frame,
    html`<h1>${action === 'retry' ? 'Retried' : 'Discarded'}</h1>
      <p class="notice ok" id="outcome">
        ${
          action === 'retry'
            ? `Retried ${done} dead letter(s) of ${table}${parked}: they are pending again and a running relay publishes them (in key order).`
            : `Discarded ${done} dead letter(s) of ${table}; their keys moved on to their next messages.`
        }${skipped}
      </p>
      <p><a href="/dead${query({ table })}">« dead letters of ${table}</a></p>`,
  );
}
