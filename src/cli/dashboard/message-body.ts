import { html, type Html } from './html.js';
import { viewPayload, visibleHeaders } from './show-payload.js';

/**
 * A message's headers (secret-looking values masked) and its payload, as text or JSON, for the pages that show one
 * outbox or inbox dead letter. `cutHint` says where the bytes not shown can be had.
 */
export function messageBody(
  message: { headers: Record<string, unknown>; payload: Buffer; contentType: string | null },
  cutHint: string,
): Html {
  const headers = visibleHeaders(message.headers);
  const payload = viewPayload(message.payload, message.contentType);
  return html`<h2>Headers</h2>
    ${
      headers.length === 0
        ? html`<p class="muted">none</p>`
        : html`<table id="headers">
            <tbody>
              ${headers.map(
                ([name, value]) =>
                  html`<tr>
                    <th class="mono">${name}</th>
                    <td class="mono">${value}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }
    <h2>Payload <span class="muted">(${payload.encoding}, ${message.payload.length} bytes)</span></h2>
    <pre id="payload">${payload.text}</pre>
    ${payload.cut > 0 ? html`<p class="muted">${payload.cut} more bytes not shown (${cutHint}).</p>` : ''}`;
}
