import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox, type OutboxMessage } from '../../src/index.js';
import { header, WebhookReceiver } from '../support/brokers/http-fixture.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

const TOKEN = `logical-dashboard-${randomBytes(8).toString('hex')}`;

/**
 * The dashboard inside a relay in mode logical (PostgreSQL): the overview shows the slot it streams, a poison
 * message and those parked behind it show as dead letters and a blocked key, and a retry from the dashboard brings
 * them back (inserted again, as `txoutbox dead retry` does) to be published in key order.
 */
describe('the dashboard of a table in mode logical (the relay with http.dashboard, PostgreSQL, a webhook)', () => {
  const schema = `dash_logical_${randomBytes(4).toString('hex')}`;
  const slot = `${schema}_s`;
  const topic = `orders.${randomBytes(3).toString('hex')}`;
  const table = `orders/${schema}.txoutbox`;
  let db: Kysely<any>;
  let cli: CliWorkspace;
  const receiver = new WebhookReceiver();
  const outbox = createOutbox({ dialect: 'postgres', schema, mode: 'logical' });

  beforeAll(async () => {
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    await receiver.start();
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'orders', dialect: 'postgres', url: inject('pgUrl'), schema }],
      brokers: { hook: { type: 'http', url: receiver.url('/gate/{topic}') } },
      relay: { mode: 'logical', slot, publication: `${schema}_p`, standbyRetryMs: 100, maxAttempts: 1 },
      http: { port: 0, dashboard: true, dashboardToken: TOKEN },
    });
    const migrated = await cli.run(['migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
  });
  afterAll(async () => {
    receiver.gate('open');
    await cli?.cleanup();
    await receiver.stop();
    await dropSlotsAndPublications(db, schema);
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db?.destroy();
  });

  const commit = (messages: OutboxMessage[]) => db.transaction().execute((trx) => outbox.enqueue(trx, messages));
  const page = async (base: string, path: string) => {
    const response = await fetch(`${base}${path}`);
    expect(response.status).toBe(200);
    return response.text();
  };

  it('shows the streamed slot, the dead head and what is parked behind it, and retries them in key order', async () => {
    receiver.gate('reject');
    const relay = cli.spawn(['relay']);
    const base = await relay.httpUrl();
    await commit([
      { id: 'l1', topic, key: 'k', payload: { n: 1 } },
      { id: 'l2', topic, key: 'k', payload: { n: 2 } },
    ]);
    const dead = async () =>
      (
        await sql<{ id: string }>`SELECT id FROM ${sql.id(schema, 'txoutbox')} WHERE state = 'dead' ORDER BY seq`.execute(db)
      ).rows.map((row) => row.id);
    await waitFor(async () => (await dead()).length === 2, 30_000, 'the poison message and the one parked behind it');

    // The overview (read every 5 s) shows the slot this relay streams, and the two dead letters.
    await waitFor(
      async () => {
        const overview = await page(base, '/');
        return overview.includes(`${slot}:`) && overview.includes('streamed') && />\s*2\s*<\/a>/.test(overview);
      },
      30_000,
      'the overview to show the streamed slot and 2 dead letters',
    );
    const blocked = await page(base, `/blocked?table=${encodeURIComponent(table)}`);
    expect(blocked).toMatch(/<tr data-key="k">\s*<td class="mono">k<\/td>\s*<td class="num">1<\/td>/);
    expect(blocked).toContain('id=l1');

    // Retry the head from the dashboard: its confirmation names l1 only; the parked l2 comes back with it.
    const confirm = await page(base, `/dead/confirm?table=${encodeURIComponent(table)}&id=l1&do=retry:selected`);
    const seqs = [...confirm.matchAll(/name="seq" value="(\d+)"/g)].map((m) => m[1]!);
    expect(seqs.length).toBe(1);
    expect(confirm).toContain('data-id="l1"');
    expect(confirm).not.toContain('data-id="l2"');
    receiver.gate('open');
    const retried = await fetch(`${base}/dead/retry`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: base, 'sec-fetch-site': 'same-origin' },
      body: new URLSearchParams([
        ['table', table],
        ['seq', seqs[0]!],
        ['token', TOKEN],
      ]).toString(),
    });
    expect(retried.status).toBe(200);
    expect(await retried.text()).toContain('(1 of them were waiting behind the ones chosen)');
    const accepted = () => receiver.accepted.map((request) => header(request.headers, 'txoutbox-id'));
    await waitFor(() => accepted().length === 2, 30_000, 'both messages published');
    expect(accepted()).toEqual(['l1', 'l2']);
    expect(await dead()).toEqual([]);

    relay.kill('SIGTERM');
    expect((await relay.exited).code).toBe(0);
  });
});
