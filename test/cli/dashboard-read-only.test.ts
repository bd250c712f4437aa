import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MemoryBroker } from '../../src/index.js';
import { cliWorkspace, type CliProcess, type CliWorkspace } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { drain, testRelay } from '../support/relay-helpers.js';

describe('txoutbox dashboard without a token (read-only), over plain HTTP', () => {
  let h: Harness;
  let cli: CliWorkspace;
  let dashboard: CliProcess;
  let base: string;
  let table: string;

  beforeAll(async () => {
    h = await createHarness('postgres');
    table = `main/${h.schema}.txoutbox`;
    await h.db.transaction().execute((trx) => h.outbox.enqueue(trx, [{ id: 'r1', topic: 'ro', key: 'k', payload: { n: 1 } }]));
    await drain(testRelay(h, new MemoryBroker().fail({ kind: 'permanent', error: 'no route' })));
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema: h.schema }],
      brokers: { mem: { type: 'memory' } },
      http: { port: 0 },
    });
    dashboard = cli.spawn(['dashboard', '--port', '0']);
    base = (await dashboard.waitForLog((line) => typeof line.dashboard === 'string')).dashboard as string;
  });
  afterAll(async () => {
    await cli?.cleanup();
    await h?.destroy();
  });

  const sameOriginPost = (path: string, body: string) =>
    fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base, 'sec-fetch-site': 'same-origin' },
      body,
    });

  it('shows the dead letter with no write buttons, and refuses every write and confirmation with 403', async () => {
    const page = await fetch(`${base}/dead?table=${encodeURIComponent(table)}`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    const body = await page.text();
    expect(body).toContain('data-id="r1"');
    expect(body).toContain('read-only');
    expect(body).not.toMatch(/type="checkbox"|Retry|Discard/);
    // No database URL on any page.
    for (const path of ['/', '/dead', '/blocked', `/dead/show?table=${encodeURIComponent(table)}&id=r1`]) {
      const text = await (await fetch(`${base}${path}`)).text();
      expect(text).not.toContain(inject('pgUrl'));
      expect(text).not.toContain('postgres://');
    }

    const seq = String((await h.rows())[0]!.seq);
    for (const path of ['/dead/retry', '/dead/discard']) {
      const refused = await sameOriginPost(path, new URLSearchParams({ table, seq, token: 'anything-at-all-1234' }).toString());
      expect(refused.status).toBe(403);
      expect(await refused.text()).toContain('read-only');
    }
    expect((await fetch(`${base}/dead/confirm?table=${encodeURIComponent(table)}&id=r1&do=retry:selected`)).status).toBe(403);
    expect((await fetch(`${base}/dead/retry`)).status).toBe(405);
    expect((await h.rows())[0]!.state).toBe('dead');
  });

  it('serves htmx and uPlot itself, and answers only loopback host names', async () => {
    const htmx = await fetch(`${base}/assets/htmx.min.js`);
    expect(htmx.status).toBe(200);
    expect(htmx.headers.get('content-type')).toContain('javascript');
    expect(await htmx.text()).toContain('htmx');
    expect((await fetch(`${base}/assets/uPlot.min.js`)).status).toBe(200);
    // fetch sets Host itself; a raw request names another host, as a rebound DNS name would.
    const status = (host: string) =>
      new Promise<number | undefined>((resolve, reject) => {
        const url = new URL(base);
        request({ host: url.hostname, port: url.port, path: '/', headers: { host } }, (response) => {
          response.resume();
          resolve(response.statusCode);
        })
          .on('error', reject)
          .end();
      });
    expect(await status('attacker.example')).toBe(403);
    expect(await status(`localhost:${new URL(base).port}`)).toBe(200);
  });
});
