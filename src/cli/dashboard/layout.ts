import { html, type Html } from './html.js';

export type Section = 'overview' | 'dead' | 'blocked' | 'inbox';

export interface PageFrame {
  title: string;
  section: Section;
  /** Whether write actions are enabled (a token is configured): only then are there buttons that write. */
  canWrite: boolean;
}

/**
 * htmx settings: no eval and no inline styles (the CSP forbids both), and every answer is swapped in, so a 403 or
 * a 404 page is shown to the operator instead of silently dropped.
 */
const HTMX_CONFIG = JSON.stringify({
  allowEval: false,
  allowScriptTags: false,
  includeIndicatorStyles: false,
  selfRequestsOnly: true,
  historyCacheSize: 0,
  responseHandling: [
    { code: '204', swap: false },
    { code: '...', swap: true },
  ],
});

const SECTIONS: readonly { section: Section; href: string; label: string }[] = [
  { section: 'overview', href: '/', label: 'Overview' },
  { section: 'dead', href: '/dead', label: 'Dead letters' },
  { section: 'blocked', href: '/blocked', label: 'Blocked keys' },
  { section: 'inbox', href: '/inbox', label: 'Inboxes' },
];

/**
 * The whole document around a page's content. Links and forms are boosted by htmx: no full reloads. A form whose
 * buttons say what to do (name="do") is not boosted: the browser's own submission always carries the button pressed.
 */
export function layout(frame: PageFrame, content: Html): Html {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="htmx-config" content="${HTMX_CONFIG}" />
        <title>${frame.title} · txoutbox</title>
        <link rel="stylesheet" href="/assets/uPlot.min.css" />
        <link rel="stylesheet" href="/assets/dashboard.css" />
        <script src="/assets/htmx.min.js" defer></script>
        <script src="/assets/uPlot.min.js" defer></script>
        <script src="/assets/dashboard.js" defer></script>
      </head>
      <body hx-boost="true">
        <header>
          <strong>txoutbox</strong>
          <nav>
            ${SECTIONS.map(
              (s) => html`<a href="${s.href}" class="${s.section === frame.section ? 'active' : ''}">${s.label}</a>`,
            )}
          </nav>
          <span class="mode">${frame.canWrite ? 'write actions need the token' : 'read-only'}</span>
        </header>
        <main>${content}</main>
      </body>
    </html> `;
}
