import { isSecretField, MASK } from '../redact.js';

/** How a payload is shown: always as text in a <pre>, never as markup. */
export interface PayloadView {
  encoding: 'json' | 'text' | 'base64';
  text: string;
  /** Bytes left out past the display limit. */
  cut: number;
}

/** Past this a payload is cut on the page (the CLI's `dead show --json` has it all). */
const DISPLAY_LIMIT = 256 * 1024;

/** JSON pretty-printed, other text as is, anything else as base64 (what `dead show` prints). */
export function viewPayload(payload: Buffer, contentType: string | null): PayloadView {
  const shown = payload.subarray(0, DISPLAY_LIMIT);
  const cut = payload.length - shown.length;
  const type = contentType ?? '';
  if (/^application\/([a-z.+-]*\+)?json\b/i.test(type) && cut === 0) {
    try {
      return { encoding: 'json', text: JSON.stringify(JSON.parse(shown.toString('utf8')), null, 2), cut };
    } catch {
      // Not valid JSON after all: shown as the text it is.
    }
  }
  if (/^(application\/([a-z.+-]*json|xml)|text\/)/i.test(type)) return { encoding: 'text', text: shown.toString('utf8'), cut };
  return { encoding: 'base64', text: shown.toString('base64'), cut };
}

/** Headers as shown: a header whose name says it holds a secret (authorization, api-key, token...) is masked. */
export function visibleHeaders(headers: Record<string, unknown>): [string, string][] {
  return Object.entries(headers).map(([name, value]) => [
    name,
    isSecretField(name) || /^authorization$|cookie/i.test(name)
      ? MASK
      : typeof value === 'string'
        ? value
        : JSON.stringify(value),
  ]);
}
