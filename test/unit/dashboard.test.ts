import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/cli/config.js';
import { hostAllowed, isLoopback, sameOrigin, tokenMatches } from '../../src/cli/dashboard/guard.js';
import { escapeHtml, html, Html, query } from '../../src/cli/dashboard/html.js';
import { RateHistory } from '../../src/cli/dashboard/rate-history.js';
import { relayInstanceOf } from '../../src/cli/dashboard/sampler.js';
import { viewPayload, visibleHeaders } from '../../src/cli/dashboard/show-payload.js';
import { CliError } from '../../src/cli/errors.js';

const request = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;

describe('the dashboard', () => {
  it('escapes every interpolated value, lists included, and keeps only Html made by the template as markup', () => {
    const evil = `<script>alert("x")</script><img src=x onerror='y'>&amp;`;
    const inner = html`<b>${evil}</b>`;
    const page = html`<p title="${evil}">${evil}${inner}${[evil, 1, null, undefined, false]}</p>`;
    expect(page.text).not.toContain('<script');
    expect(page.text).not.toContain('<img');
    expect(page.text).toBe(
      `<p title="${escapeHtml(evil)}">${escapeHtml(evil)}<b>${escapeHtml(evil)}</b>${escapeHtml(evil)}1</p>`,
    );
    expect(escapeHtml(`<>&"'`)).toBe('&lt;&gt;&amp;&quot;&#39;');
    // No other code can turn a string into Html.
    expect(() => new Html(Symbol('html'), '<script>')).toThrow(TypeError);
    expect(query({ table: 'a/b.c', topic: 'x&y', empty: '', none: undefined })).toBe('?table=a%2Fb.c&topic=x%26y');
  });

  it('compares the token in constant time and refuses a missing, empty or different one', () => {
    expect(tokenMatches('0123456789abcdef-token', '0123456789abcdef-token')).toBe(true);
    expect(tokenMatches('0123456789abcdef-token', '0123456789abcdef-tokeN')).toBe(false);
    expect(tokenMatches('0123456789abcdef-token', '0123456789abcdef')).toBe(false);
    expect(tokenMatches('0123456789abcdef-token', '')).toBe(false);
    expect(tokenMatches('0123456789abcdef-token', undefined)).toBe(false);
  });

  it('takes writes only from its own origin: Sec-Fetch-Site same-origin, Origin equal to the Host', () => {
    const host = '127.0.0.1:9464';
    expect(sameOrigin(request({ host, 'sec-fetch-site': 'same-origin', origin: `http://${host}` }))).toBe(true);
    expect(sameOrigin(request({ host, 'sec-fetch-site': 'same-site', origin: 'http://127.0.0.1:8080' }))).toBe(false);
    expect(sameOrigin(request({ host, 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' }))).toBe(false);
    expect(sameOrigin(request({ host, origin: 'https://evil.example' }))).toBe(false);
    expect(sameOrigin(request({ host, origin: 'null' }))).toBe(false);
    // No browser headers at all: a script or curl, where the token alone decides.
    expect(sameOrigin(request({ host }))).toBe(true);
  });

  it('bound to a loopback address, answers only loopback host names (no DNS rebinding)', () => {
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback('0.0.0.0')).toBe(false);
    for (const host of ['127.0.0.1:9464', 'localhost:1', 'LOCALHOST', '[::1]:9464'])
      expect(hostAllowed(request({ host }), true)).toBe(true);
    for (const host of ['evil.example:9464', '127.0.0.1.evil.example', ''])
      expect(hostAllowed(request({ host }), true)).toBe(false);
    expect(hostAllowed(request({}), true)).toBe(false);
    expect(hostAllowed(request({ host: 'sidecar.internal:9464' }), false)).toBe(true);
  });

  it('shows JSON payloads pretty, text as text, anything else as base64, and masks secret-looking headers', () => {
    expect(viewPayload(Buffer.from('{"a":[1,"<b>"]}'), 'application/json')).toEqual({
      encoding: 'json',
      text: '{\n  "a": [\n    1,\n    "<b>"\n  ]\n}',
      cut: 0,
    });
    expect(viewPayload(Buffer.from('{not json'), 'application/json').encoding).toBe('text');
    expect(viewPayload(Buffer.from('<p>hi</p>'), 'text/html')).toEqual({ encoding: 'text', text: '<p>hi</p>', cut: 0 });
    expect(viewPayload(Buffer.from([0, 1, 2, 255]), 'application/octet-stream')).toEqual({
      encoding: 'base64',
      text: 'AAEC/w==',
      cut: 0,
    });
    expect(viewPayload(Buffer.alloc(300 * 1024, 'a'), 'text/plain').cut).toBe(300 * 1024 - 256 * 1024);
    expect(
      visibleHeaders({ 'x-tenant': 'acme', Authorization: 'Bearer x', 'x-api-key': 'k', Cookie: 'c', 'x-token': 't', n: 1 }),
    ).toEqual([
      ['x-tenant', 'acme'],
      ['Authorization', '***'],
      ['x-api-key', '***'],
      ['Cookie', '***'],
      ['x-token', '***'],
      ['n', '1'],
    ]);
  });

  it('keeps 15 minutes of rates per table, dropping older points, and names relays by their instance id', () => {
    const history = new RateHistory(15 * 60_000);
    const start = Date.UTC(2026, 0, 1);
    history.add(start, new Map([['a/t', 1]]));
    history.add(
      start + 5 * 60_000,
      new Map([
        ['a/t', 2],
        ['b/t', null],
      ]),
    );
    history.add(
      start + 16 * 60_000,
      new Map([
        ['a/t', 3],
        ['b/t', 4],
      ]),
    );
    expect(history.series()).toEqual({
      names: ['a/t', 'b/t'],
      times: [(start + 5 * 60_000) / 1000, (start + 16 * 60_000) / 1000],
      values: [
        [2, 3],
        [null, 4],
      ],
    });
    expect(history.latest('b/t')).toBe(4);
    expect(relayInstanceOf('host-1:4242:a1b2c3:9f8e7d:17')).toBe('host-1:4242:a1b2c3');
    expect(relayInstanceOf('custom')).toBe('custom');
  });

  it('reads http.dashboard and http.dashboardToken (from ${VAR}), refuses a short token, and never prints it', () => {
    const base = { databases: [{ name: 'a', dialect: 'postgres', url: 'postgres://h/db' }], brokers: { m: { type: 'memory' } } };
    const secret = 'fb2c9a6e1d7b4f03a8c5e2d9';
    const { config, redactor } = parseConfig(
      { ...base, http: { dashboard: '${DASH}', dashboardToken: '${DASH_TOKEN}' } },
      { DASH: 'true', DASH_TOKEN: secret },
    );
    expect(config.http).toMatchObject({ dashboard: true, dashboardToken: secret, host: '127.0.0.1' });
    expect(redactor.text(`token ${secret}`)).toBe('token ***');
    let refused: unknown;
    try {
      parseConfig({ ...base, http: { dashboardToken: 'short-s3cret' } }, {});
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(CliError);
    expect((refused as CliError).message).toContain('http.dashboardToken: must be at least 16 characters');
    expect((refused as CliError).message).not.toContain('short-s3cret');
  });
});
