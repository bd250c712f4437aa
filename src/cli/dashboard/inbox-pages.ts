import type { InboxDeadLetter } from '../../dedupe/message.js';
import { formatAge, truncate } from '../format.js';
import { html, query, type Html } from './html.js';
import { layout, type PageFrame } from './layout.js';
import { messageBody } from './message-body.js';

export interface InboxData {
  inboxes: readonly string[];
  inbox: string;
  consumer: string | null;
  processed: readonly { consumer: string; processed: number }[];
  letters: readonly InboxDeadLetter[];
  nextAfter: string | null;
  paged: boolean;
  now: Date;
  clean: (text: string) => string;
}

const age = (at: Date, now: Date) => formatAge(Math.max(0, (now.getTime() - at.getTime()) / 1000));

function letterRows(letters: readonly InboxDeadLetter[], inbox: string, now: Date, clean: (t: string) => string, pick: boolean) {
  return letters.map(
    (letter) =>
      html`<tr data-seq="${letter.seq}">
        ${pick ? html`<td><input type="checkbox" name="seq" value="${letter.seq}" aria-label="select ${letter.seq}" /></td>` : ''}
        <td class="mono"><a href="/inbox/show${query({ inbox, seq: letter.seq })}">${letter.seq}</a></td>
        <td class="mono">${letter.consumer}</td>
        <td class="mono">${letter.messageId ?? '-'}</td>
        <td class="mono">${letter.topic ?? '-'}</td>
        <td class="mono">${letter.source}: ${letter.destination}</td>
        <td class="num">${letter.attempts}</td>
        <td class="num">${age(letter.deadAt, now)}</td>
        <td class="error-text">${truncate(clean(letter.error), 120)}</td>
      </tr>`,
  );
}

const HEAD = html`<th>Seq</th>
  <th>Consumer</th>
  <th>Message id</th>
  <th>Topic</th>
  <th>From</th>
  <th class="num">Attempts</th>
  <th class="num">Age</th>
  <th>Error</th>`;

export function inboxPage(frame: PageFrame, data: InboxData): Html {
  const { inbox } = data;
  return layout(
    frame,
    html`<h1>Inboxes</h1>
      <form class="filters" method="get" action="/inbox">
        <label
          >Inbox
          <select name="inbox">
            ${data.inboxes.map((i) => html`<option value="${i}" ${i === inbox ? html`selected` : ''}>${i}</option>`)}
          </select></label
        >
        <label>Consumer<input name="consumer" value="${data.consumer ?? ''}" /></label>
        <button type="submit">Show</button>
      </form>
      <h2>Processed, per consumer</h2>
      ${
        data.processed.length === 0
          ? html`<p class="muted">No processed message is recorded (records older than the inbox's retention are deleted).</p>`
          : html`<table id="processed">
              <thead>
                <tr>
                  <th>Consumer</th>
                  <th class="num">Processed (kept records)</th>
                </tr>
              </thead>
              <tbody>
                ${data.processed.map(
                  (p) =>
                    html`<tr>
                      <td class="mono"><a href="/inbox${query({ inbox, consumer: p.consumer })}">${p.consumer}</a></td>
                      <td class="num">${p.processed}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
      <h2>Consumer-side dead letters${data.consumer === null ? '' : html` of ${data.consumer}`}</h2>
      <p class="muted">
        A handler that kept failing leaves its message here. Replay sends a RabbitMQ dead letter back to its queue (the consumer
        runs it through its inbox again, so one it did process after all is dropped); others are replayed from the consumer, where
        the handler lives (<code>inbox.replayDeadLetter</code>). Delete the ones that need no processing.
      </p>
      ${
        data.letters.length === 0
          ? html`<p>No dead letters${data.paged ? ' past this point' : ''}.</p>`
          : html`<form method="get" action="/inbox/confirm" hx-boost="false">
              <input type="hidden" name="inbox" value="${inbox}" />
              <table id="inbox-dead">
                <thead>
                  <tr>
                    ${frame.canWrite ? html`<th><input type="checkbox" data-select-all="seq" aria-label="select every row" /></th>` : ''}
                    ${HEAD}
                  </tr>
                </thead>
                <tbody>
                  ${letterRows(data.letters, inbox, data.now, data.clean, frame.canWrite)}
                </tbody>
              </table>
              ${
                frame.canWrite
                  ? html`<div class="actions">
                      <button type="submit" name="do" value="replay">Replay selected…</button>
                      <button type="submit" name="do" value="delete" class="danger">Delete selected…</button>
                    </div>`
                  : ''
              }
            </form>`
      }
      <div class="actions">
        ${data.paged ? html`<a href="/inbox${query({ inbox, consumer: data.consumer ?? undefined })}">« first page</a>` : ''}
        ${
          data.nextAfter === null
            ? ''
            : html`<a href="/inbox${query({ inbox, consumer: data.consumer ?? undefined, after: data.nextAfter })}"
                >next page »</a
              >`
        }
      </div>`,
  );
}

export function inboxShowPage(
  frame: PageFrame,
  inbox: string,
  letter: InboxDeadLetter,
  now: Date,
  clean: (text: string) => string,
): Html {
  return layout(
    frame,
    html`<h1>Inbox dead letter <span class="mono">${letter.seq}</span></h1>
      <dl class="details">
        <dt>Inbox</dt>
        <dd>${inbox}</dd>
        <dt>Consumer</dt>
        <dd class="mono">${letter.consumer}</dd>
        <dt>Message id</dt>
        <dd class="mono">${letter.messageId ?? '-'}</dd>
        <dt>Topic</dt>
        <dd class="mono">${letter.topic ?? '-'}</dd>
        <dt>From</dt>
        <dd class="mono">${letter.source}: ${letter.destination}</dd>
        <dt>Attempts</dt>
        <dd>${letter.attempts}</dd>
        <dt>Dead since</dt>
        <dd>${letter.deadAt.toISOString()} (${age(letter.deadAt, now)} ago)</dd>
        <dt>Error</dt>
        <dd><pre class="error-text">${clean(letter.error)}</pre></dd>
      </dl>
      ${messageBody(letter, 'inbox.deadLetters returns them')}
      ${
        frame.canWrite
          ? html`<form method="get" action="/inbox/confirm" class="actions" hx-boost="false">
              <input type="hidden" name="inbox" value="${inbox}" />
              <input type="hidden" name="seq" value="${letter.seq}" />
              <button type="submit" name="do" value="replay">Replay…</button>
              <button type="submit" name="do" value="delete" class="danger">Delete…</button>
            </form>`
          : ''
      }
      <p><a href="/inbox${query({ inbox })}">« ${inbox}</a></p>`,
  );
}

export interface InboxConfirmData {
  inbox: string;
  action: 'replay' | 'delete';
  letters: readonly InboxDeadLetter[];
  /** Dead letters that cannot be replayed from here, by seq, and why. */
  refusals: ReadonlyMap<string, string>;
  now: Date;
  clean: (text: string) => string;
}

/** Names every dead letter the action will touch; the form carries exactly their seqs. */
export function inboxConfirmPage(frame: PageFrame, data: InboxConfirmData): Html {
  const { inbox, action } = data;
  const chosen = data.letters.filter((l) => !data.refusals.has(l.seq));
  const verb = action === 'replay' ? 'Replay' : 'Delete';
  return layout(
    frame,
    html`<h1>${verb} ${chosen.length} dead letter(s) of ${inbox}?</h1>
      <p>
        ${
          action === 'replay'
            ? 'Each is published again to the queue it was consumed from (RabbitMQ confirms it), then removed from here.'
            : 'They are deleted for good; the consumer will not process them.'
        }
      </p>
      <table id="confirm-rows">
        <thead>
          <tr>
            ${HEAD}
          </tr>
        </thead>
        <tbody>
          ${letterRows(chosen, inbox, data.now, data.clean, false)}
        </tbody>
      </table>
      ${
        data.refusals.size === 0
          ? ''
          : html`<div class="notice bad" id="refusals">
              Left out: ${[...data.refusals].map(([seq, why]) => html`<div><span class="mono">${seq}</span>: ${why}</div>`)}
            </div>`
      }
      ${
        chosen.length === 0
          ? html`<p class="notice">Nothing to ${action}.</p>`
          : html`<form method="post" action="/inbox/${action}" class="actions">
              <input type="hidden" name="inbox" value="${inbox}" />
              ${chosen.map((l) => html`<input type="hidden" name="seq" value="${l.seq}" />`)}
              <label>Token <input type="password" name="token" autocomplete="off" required /></label>
              <button type="submit" class="${action === 'replay' ? 'primary' : 'danger'}">${verb} these ${chosen.length}</button>
              <a href="/inbox${query({ inbox })}">cancel</a>
            </form>`
      }`,
  );
}

export function inboxDonePage(
  frame: PageFrame,
  inbox: string,
  action: 'replay' | 'delete',
  chosen: number,
  done: number,
  failures: readonly string[],
): Html {
  return layout(
    frame,
    html`<h1>${action === 'replay' ? 'Replayed' : 'Deleted'}</h1>
      <p class="notice ok" id="outcome">
        ${
          action === 'replay'
            ? `Replayed ${done} dead letter(s) of ${inbox}: they are back in their queues.`
            : `Deleted ${done} dead letter(s) of ${inbox}.`
        }${action === 'delete' && chosen > done ? ` ${chosen - done} were gone already.` : ''}
      </p>
      ${
        failures.length === 0
          ? ''
          : html`<div class="notice bad" id="problem">
              Not replayed (still here): ${failures.map((f) => html`<div>${f}</div>`)}
            </div>`
      }
      <p><a href="/inbox${query({ inbox })}">« ${inbox}</a></p>`,
  );
}
