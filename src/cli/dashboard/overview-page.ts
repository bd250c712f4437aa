import { formatAge, formatBytes } from '../format.js';
import { html, query, type Html } from './html.js';
import { layout, type PageFrame } from './layout.js';
import { nameOf, type RelaySeen, type TableReading } from './sampler.js';

export interface OverviewData {
  tables: readonly TableReading[];
  relays: readonly RelaySeen[];
  intervalMs: number;
  /** Where the table's rate comes from, for the chart's caption. */
  rateSource: 'counters' | 'sent rows';
  now: Date;
}

const rate = (value: number | null) => (value === null ? '-' : value < 10 ? value.toFixed(1) : Math.round(value).toString());

function tableRows(reading: TableReading): Html {
  const name = nameOf(reading.target);
  const status = reading.status;
  const topics = status?.topics ?? [];
  const sum = (pick: (t: (typeof topics)[number]) => number) => topics.reduce((n, t) => n + pick(t), 0);
  const oldest = topics.reduce<Date | null>(
    (o, t) => (t.oldestPendingAt !== null && (o === null || t.oldestPendingAt < o) ? t.oldestPendingAt : o),
    null,
  );
  const ageOf = (at: Date | null) =>
    at === null || status === null ? '-' : formatAge(Math.max(0, (status.now.getTime() - at.getTime()) / 1000));
  const dead = sum((t) => t.dead);
  const expired = sum((t) => t.expiredLeases);
  const mode = reading.slots.length > 0 ? 'logical' : 'polling';
  return html`<tbody data-table="${name}">
    <tr>
      <td>
        <strong>${name}</strong> <span class="muted">${mode}</span>
        ${reading.error === null ? '' : html`<div class="error-text">last read failed: ${reading.error}</div>`}
      </td>
      <td class="num" data-field="pending">${status === null ? '-' : sum((t) => t.pending)}</td>
      <td class="num">${ageOf(oldest)}</td>
      <td class="num">
        ${status === null ? '-' : sum((t) => t.inFlight)}${expired > 0 ? html` <span class="warn">(+${expired} expired)</span>` : ''}
      </td>
      <td class="num" data-field="dead">
        ${status === null ? '-' : dead > 0 ? html`<a class="bad" href="/dead${query({ table: name })}">${dead}</a>` : '0'}
      </td>
      <td class="num">${rate(reading.publishedPerSecond)}</td>
      <td>
        ${
          reading.slots.length === 0
            ? html`<span class="muted">-</span>`
            : reading.slots.map(
                (slot) =>
                  html`<div class="mono">
                    ${slot.slot}:
                    ${
                      !slot.exists
                        ? html`<span class="bad">missing</span>`
                        : html`${slot.active ? html`<span class="ok">streamed</span>` : html`<span class="warn">idle</span>`} lag
                          ${formatBytes(slot.lagBytes)}, retains ${formatBytes(slot.retainedBytes)}
                          ${slot.walStatus === 'lost' ? html`<span class="bad">WAL lost</span>` : ''}`
                    }
                  </div>`,
              )
        }
      </td>
    </tr>
    ${
      topics.length > 1
        ? html`<tr>
            <td colspan="7">
              <details>
                <summary>${topics.length} topics</summary>
                <table>
                  <thead>
                    <tr>
                      <th>Topic</th>
                      <th class="num">Pending</th>
                      <th class="num">Oldest</th>
                      <th class="num">In flight</th>
                      <th class="num">Dead</th>
                      <th class="num">Sent/1m</th>
                    </tr>
                  </thead>
                  <tbody>
                    ${topics.map(
                      (t) =>
                        html`<tr>
                          <td class="mono">${t.topic}</td>
                          <td class="num">${t.pending}</td>
                          <td class="num">${ageOf(t.oldestPendingAt)}</td>
                          <td class="num">${t.inFlight}</td>
                          <td class="num">${t.dead}</td>
                          <td class="num">${t.sentLastMinute}</td>
                        </tr>`,
                    )}
                  </tbody>
                </table>
              </details>
            </td>
          </tr>`
        : ''
    }
  </tbody>`;
}

/** The part that refreshes itself every few seconds (the chart outside it keeps its own state). */
export function overviewFragment(data: OverviewData): Html {
  const readAt = data.tables.map((t) => t.readAt).filter((d): d is Date => d !== null);
  const last = readAt.length === 0 ? null : new Date(Math.max(...readAt.map((d) => d.getTime())));
  return html`<div
    id="overview"
    hx-get="/fragment/overview"
    hx-trigger="every ${Math.max(2, Math.round(data.intervalMs / 1000))}s"
    hx-swap="outerHTML"
  >
    <p class="muted">
      ${last === null ? 'No reading yet.' : html`Read at ${last.toISOString()}; every ${Math.round(data.intervalMs / 1000)} s.`}
    </p>
    <table id="tables">
      <thead>
        <tr>
          <th>Database / table</th>
          <th class="num">Pending</th>
          <th class="num">Oldest pending</th>
          <th class="num">In flight</th>
          <th class="num">Dead</th>
          <th class="num">Published/s</th>
          <th>Replication slots</th>
        </tr>
      </thead>
      ${data.tables.map(tableRows)}
    </table>
    <h2>Relays seen (last 15 minutes)</h2>
    ${
      data.relays.length === 0
        ? html`<p class="muted">
            No relay has held a lease since the dashboard started (a relay holds leases only while it publishes; a logical relay
            shows as its streamed slot).
          </p>`
        : html`<table id="relays">
            <thead>
              <tr>
                <th>Relay (host:pid:id)</th>
                <th>Holding now</th>
                <th>Lease until</th>
                <th>Last seen</th>
              </tr>
            </thead>
            <tbody>
              ${data.relays.map(
                (relay) =>
                  html`<tr>
                    <td class="mono">${relay.instance}</td>
                    <td>${Object.entries(relay.held).map(([table, n]) => html`<div>${n} in ${table}</div>`)}</td>
                    <td>${relay.leaseUntil?.toISOString() ?? '-'}</td>
                    <td>${formatAge(Math.max(0, (data.now.getTime() - relay.lastSeen.getTime()) / 1000))} ago</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }
  </div>`;
}

export function overviewPage(frame: PageFrame, data: OverviewData): Html {
  return layout(
    frame,
    html`<h1>Overview</h1>
      ${overviewFragment(data)}
      <h2>Published per second, last 15 minutes</h2>
      <div id="rates" data-src="/api/rates"></div>
      <p class="muted">
        ${
          data.rateSource === 'counters'
            ? "From this relay's own counters."
            : 'Counted from the sent rows the relays keep (relay.retainSentMs, a minute by default; tables in mode logical keep none unless it is set for them).'
        }
      </p>`,
  );
}
