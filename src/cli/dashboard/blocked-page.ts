import type { BlockedKey } from '../../dialects/admin.js';
import { formatAge, truncate } from '../format.js';
import { html, query, type Html } from './html.js';
import { layout, type PageFrame } from './layout.js';

export interface BlockedData {
  tables: readonly string[];
  table: string;
  keys: readonly BlockedKey[];
  nextAfter: string | null;
  paged: boolean;
  now: Date;
  clean: (text: string) => string;
}

/** Keys held by a dead head (block-key): what waits, and the head one click away. */
export function blockedPage(frame: PageFrame, data: BlockedData): Html {
  const { table } = data;
  return layout(
    frame,
    html`<h1>Blocked keys</h1>
      <form class="filters" method="get" action="/blocked">
        <label
          >Table
          <select name="table">
            ${data.tables.map((t) => html`<option value="${t}" ${t === table ? html`selected` : ''}>${t}</option>`)}
          </select></label
        >
        <button type="submit">Show</button>
      </form>
      <p class="muted">
        A key is blocked while its oldest unsent message is a dead letter (relay.deadLetterPolicy block-key): later messages of
        the key wait, so they are never published out of order. Retry or discard the head to let them go.
      </p>
      ${
        data.keys.length === 0
          ? html`<p>No key of ${table} is blocked${data.paged ? ' past this point' : ''}.</p>`
          : html`<table id="blocked">
              <thead>
                <tr>
                  <th>Key</th>
                  <th class="num">Waiting</th>
                  <th>Dead head</th>
                  <th>Topic</th>
                  <th class="num">Age</th>
                  <th>Last error</th>
                </tr>
              </thead>
              <tbody>
                ${data.keys.map(
                  (k) =>
                    html`<tr data-key="${k.key}">
                      <td class="mono">${k.key}</td>
                      <td class="num">${k.waiting}</td>
                      <td class="mono"><a href="/dead/show${query({ table, id: k.head.id })}">${k.head.id}</a></td>
                      <td class="mono">${k.head.topic}</td>
                      <td class="num">${formatAge(Math.max(0, (data.now.getTime() - k.head.createdAt.getTime()) / 1000))}</td>
                      <td class="error-text">${truncate(data.clean(k.head.lastError ?? ''), 120)}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
      <div class="actions">
        ${data.paged ? html`<a href="/blocked${query({ table })}">« first page</a>` : ''}
        ${data.nextAfter === null ? '' : html`<a href="/blocked${query({ table, after: data.nextAfter })}">next page »</a>`}
      </div>`,
  );
}
