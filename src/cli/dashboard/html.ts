/**
 * Every page of the dashboard is built with `html`: interpolated values are escaped as text unless they are Html
 * themselves (built by `html` too), so nothing read from a table (payload, header, key, error) can ever become
 * markup. There is deliberately no way to mark an arbitrary string as safe.
 */
/** Held only by this module: no other code can make an Html from a string. */
const MINT = Symbol('html');

export class Html {
  constructor(
    mint: symbol,
    readonly text: string,
  ) {
    if (mint !== MINT) throw new TypeError('Html is made by the html template only');
  }

  toString(): string {
    return this.text;
  }
}

/** A value that may appear in a template: text (escaped), numbers, Html, nothing, or a list of those. */
export type HtmlValue = Html | string | number | bigint | boolean | null | undefined | readonly HtmlValue[];

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text fit for an element's content or a quoted attribute value. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ESCAPES[char]!);
}

function render(value: HtmlValue): string {
  if (value instanceof Html) return value.text;
  if (value === null || value === undefined || value === false) return '';
  if (Array.isArray(value)) return value.map(render).join('');
  return escapeHtml(String(value));
}

/** The tagged template: the literal parts are the page's own markup, every `${value}` is escaped. */
export function html(strings: TemplateStringsArray, ...values: readonly HtmlValue[]): Html {
  let out = strings[0]!;
  values.forEach((value, index) => {
    out += render(value) + strings[index + 1]!;
  });
  return new Html(MINT, out);
}

/** A query string from parameters (undefined and empty values left out), for links; escaped where it is placed. */
export function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined && value !== '') search.set(name, String(value));
  const text = search.toString();
  return text === '' ? '' : `?${text}`;
}
