import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createInbox, migrateInbox, type DialectName, type OutboxMessage } from '../../src/index.js';
import { AMQP_URL, QueueConsumer, randomName, withChannel } from '../support/brokers/rabbitmq-fixture.js';
import { artifact, launchBrowser, type TestBrowser } from '../support/browser.js';
import { cliWorkspace, type CliProcess, type CliWorkspace } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { waitFor } from '../support/relay-helpers.js';

const TOKEN = `dashboard-token-${randomBytes(12).toString('hex')}`;
/** Content a browser would run if the page ever let a payload, header or error be markup. */
const XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">';

/**
 * PostgreSQL runs the dashboard on its own (`txoutbox dashboard`) next to a relay; MariaDB runs it inside the relay
 * (`http.dashboard: true`), on the port of /metrics.
 */
const CASES: { dialect: DialectName; embedded: boolean }[] = [
  { dialect: 'postgres', embedded: false },
  { dialect: 'mysql', embedded: true },
];

describe.each(CASES)(
  'the dashboard in headless Chromium, on $dialect (embedded in the relay: $embedded)',
  ({ dialect, embedded }) => {
    // No queue has these names yet: RabbitMQ returns the messages (mandatory), so the relay dead-letters them at once.
    const queue = randomName('txoutbox-dashboard');
    const otherQueue = randomName('txoutbox-dashboard-other');
    const topic = `orders.${randomBytes(3).toString('hex')}`;
    const legacy = `legacy.${randomBytes(3).toString('hex')}`;
    let h: Harness;
    let cli: CliWorkspace;
    let browser: TestBrowser;
    let relay: CliProcess;
    let dashboard: CliProcess | null = null;
    let base: string;
    let table: string;
    let consumer: QueueConsumer | undefined;
    const shots = (name: string) => artifact('dashboard', `${dialect}-${name}.png`);
    const inbox = () => createInbox({ dialect, schema: h.schema });

    const stateOf = async (id: string) => (await h.rows()).find((row) => row.id === id)?.state ?? 'gone';
    const enqueue = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));

    beforeAll(async () => {
      h = await createHarness(dialect);
      await migrateInbox(h.db, { dialect, schema: h.schema });
      table = `shop/${h.schema}.txoutbox`;
      cli = await cliWorkspace();
      await cli.writeConfig({
        databases: [
          {
            name: 'shop',
            dialect,
            url: inject(dialect === 'postgres' ? 'pgUrl' : 'mysqlUrl'),
            schema: h.schema,
            tables: [{ table: 'txoutbox' }],
            inbox: {},
          },
        ],
        brokers: {
          rabbit: {
            type: 'rabbitmq',
            url: AMQP_URL,
            routes: { [topic]: { exchange: '', routingKey: queue }, [legacy]: { exchange: '', routingKey: otherQueue } },
          },
        },
        relay: { pollIntervalMs: 100 },
        http: embedded
          ? { enabled: true, port: 0, dashboard: true, dashboardToken: TOKEN }
          : { enabled: false, port: 0, dashboardToken: TOKEN },
      });
      browser = await launchBrowser();
    });
    afterAll(async () => {
      await browser?.close();
      await cli?.cleanup();
      await consumer?.close();
      await withChannel((channel) => channel.deleteQueue(queue)).catch(() => {});
      await h?.destroy();
    });

    /** Opens a page of the dashboard, failing the test on any script error it reports. */
    async function open(path: string): Promise<Page> {
      const page = await browser.context.newPage();
      page.on('pageerror', (error) => {
        throw error;
      });
      page.on('dialog', (dialog) => {
        throw new Error(`the page opened a dialog: ${dialog.message()}`);
      });
      await page.goto(`${base}${path}`);
      return page;
    }

    it(
      'shows a poison message, retries it once the destination exists (published in key order), and discards exactly the confirmed rows',
      { timeout: 90_000 },
      async () => {
        // k1: a poison head and a message behind it; k2: a payload, header and key that are markup; legacy: to discard.
        await enqueue([
          {
            id: 'm1',
            topic,
            key: 'k1',
            payload: { n: 1 },
            headers: { 'x-tenant': 'acme', authorization: 'Bearer secret-value' },
          },
          { id: 'm2', topic, key: 'k1', payload: { n: 2 } },
          { id: 'm3', topic, key: `k2${XSS}`, payload: { note: XSS }, headers: { 'x-note': XSS } },
          { id: 'm4', topic: legacy, key: 'k3', payload: { n: 4 } },
          { id: 'm5', topic: legacy, payload: { n: 5 } },
        ]);
        relay = cli.spawn(['relay']);
        if (embedded) {
          base = await relay.httpUrl();
        } else {
          await relay.httpUrl();
          dashboard = cli.spawn(['dashboard', '--port', '0']);
          base = (await dashboard.waitForLog((line) => typeof line.dashboard === 'string')).dashboard as string;
        }
        await waitFor(
          async () => (await Promise.all(['m1', 'm3', 'm4', 'm5'].map(stateOf))).every((state) => state === 'dead'),
          30_000,
          'the relay dead-letters the unroutable messages',
        );

        // The overview counts them once the sampler has read the table again (every 5 s).
        const overview = await open('/');
        const deadCell = overview.locator(`tbody[data-table="${table}"] [data-field="dead"]`);
        await expect.poll(async () => (await deadCell.textContent())?.trim(), { timeout: 20_000 }).toBe('4');
        expect((await overview.locator(`tbody[data-table="${table}"] [data-field="pending"]`).textContent())?.trim()).toBe('1');
        await overview.locator('#rates .uplot').waitFor();
        await overview.screenshot({ path: await shots('overview'), fullPage: true });

        // The dead letters page lists them; k1 is blocked behind m1.
        await overview.getByRole('link', { name: 'Dead letters' }).click();
        await overview.locator('tr[data-id="m1"]').waitFor();
        const dead = overview;
        expect(await dead.locator('tbody tr[data-id]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')))).toEqual(
          ['m1', 'm3', 'm4', 'm5'],
        );
        expect(await dead.locator('tr[data-id="m1"]').textContent()).toContain('(blocked)');
        expect(await dead.locator('tr[data-id="m1"] .error-text').textContent()).toContain('NO_ROUTE');
        await dead.screenshot({ path: await shots('dead-letters'), fullPage: true });

        // One dead letter in full: the payload as JSON text, headers, and no secret header value.
        await dead.getByRole('link', { name: 'm1', exact: true }).click();
        await dead.locator('#payload').waitFor();
        expect(JSON.parse((await dead.locator('#payload').textContent())!)).toEqual({ n: 1 });
        const headers = await dead.locator('#headers').textContent();
        expect(headers).toContain('acme');
        expect(headers).not.toContain('secret-value');
        await dead.screenshot({ path: await shots('dead-letter'), fullPage: true });

        // Markup in a payload, a header and a key is shown as text: nothing runs, no element is made of it.
        const xss = await open(`/dead/show?table=${encodeURIComponent(table)}&id=m3`);
        expect(JSON.parse((await xss.locator('#payload').textContent())!)).toEqual({ note: XSS });
        expect(await xss.locator('#headers').textContent()).toContain(XSS);
        expect(await xss.locator('main').textContent()).toContain(`k2${XSS}`);
        expect(await xss.locator('main script, main img').count()).toBe(0);
        expect(await xss.evaluate(() => (globalThis as { __xss?: number }).__xss)).toBeUndefined();
        await xss.screenshot({ path: await shots('dead-letter-markup'), fullPage: true });
        await xss.close();

        // Blocked keys: k1 waits behind m1, one click away.
        const blocked = await open('/blocked');
        const k1 = blocked.locator('tr[data-key="k1"]');
        expect(await k1.locator('td.num').first().textContent()).toBe('1');
        await blocked.screenshot({ path: await shots('blocked-keys'), fullPage: true });
        await k1.getByRole('link', { name: 'm1' }).click();
        await blocked.locator('#payload').waitFor();
        expect(blocked.url()).toContain('id=m1');
        await blocked.close();

        // Writes without the token, or from another site with it, are refused and change nothing.
        const m1Seq = String((await h.rows()).find((row) => row.id === 'm1')!.seq);
        const unauthorized = await dead.evaluate(
          async ([t, seq]) =>
            (await fetch('/dead/discard', { method: 'POST', body: new URLSearchParams({ table: t!, seq: seq! }) })).status,
          [table, m1Seq],
        );
        expect(unauthorized).toBe(403);
        const forged = await crossSiteForm(`${base}/dead/discard`, { table, seq: m1Seq, token: TOKEN });
        try {
          const attacker = await browser.context.newPage();
          await attacker.goto(forged.url);
          await attacker.locator('#problem').waitFor();
          expect(await attacker.locator('#problem').textContent()).toContain('cross-site request refused');
          await attacker.close();
        } finally {
          await forged.close();
        }
        expect(await stateOf('m1')).toBe('dead');

        // Fix the destination, then retry m1 from the page: the confirmation names exactly m1.
        await withChannel((channel) => channel.assertQueue(queue, { durable: true }));
        consumer = await QueueConsumer.start(queue);
        await dead.goto(`${base}/dead?table=${encodeURIComponent(table)}`);
        await dead.locator('tr[data-id="m1"] input[type="checkbox"]').check();
        await dead.getByRole('button', { name: 'Retry selected…' }).click();
        await dead.locator('#confirm-rows').waitFor();
        expect(await confirmed(dead)).toEqual(['m1']);
        await dead.screenshot({ path: await shots('confirm-retry'), fullPage: true });
        // A wrong token is refused on the page and nothing moves.
        await dead.locator('input[name="token"]').fill('not-the-token-at-all');
        await dead.getByRole('button', { name: 'Retry these 1' }).click();
        await dead.locator('#problem').waitFor();
        expect(await dead.locator('#problem').textContent()).toContain('Wrong or missing token');
        expect(await stateOf('m1')).toBe('dead');
        await dead.goBack();
        await dead.locator('input[name="token"]').fill(TOKEN);
        await dead.getByRole('button', { name: 'Retry these 1' }).click();
        await dead.locator('#outcome').waitFor();
        expect(await dead.locator('#outcome').textContent()).toContain('Retried 1 dead letter(s)');
        await waitFor(() => consumer!.received().length === 2, 20_000, 'the retried message and the one behind it');
        expect(consumer.received().map((m) => m.id)).toEqual(['m1', 'm2']);
        // The chart's series (the relay's counters in the relay, the kept sent rows on its own) show the two published.
        const highest = () =>
          dead.evaluate(async (name) => {
            const rates = (await (await fetch('/api/rates')).json()) as { names: string[]; values: (number | null)[][] };
            return Math.max(0, ...(rates.values[rates.names.indexOf(name)] ?? []).map((v) => v ?? 0));
          }, table);
        await expect.poll(highest, { timeout: 30_000 }).toBeGreaterThan(0);
        const after = await open('/');
        await after.locator('#rates .uplot').waitFor();
        await after.screenshot({ path: await shots('overview-after-retry'), fullPage: true });
        await after.close();

        // Discard every legacy dead letter matching a filter: the confirmation names m4 and m5; m6, dead-lettered while
        // the operator reads it, is not among the rows acted on.
        await dead.goto(`${base}/dead?table=${encodeURIComponent(table)}`);
        await dead.locator('input[name="topic"]').fill(legacy);
        await dead.getByRole('button', { name: 'Filter' }).click();
        await expect.poll(() => dead.locator('tbody tr[data-id]').count()).toBe(2);
        await dead.getByRole('button', { name: 'Discard all matching…' }).click();
        await dead.locator('#confirm-rows').waitFor();
        expect(await confirmed(dead)).toEqual(['m4', 'm5']);
        await enqueue([{ id: 'm6', topic: legacy, payload: { n: 6 } }]);
        await waitFor(async () => (await stateOf('m6')) === 'dead', 20_000, 'm6 dead-lettered');
        await dead.locator('input[name="token"]').fill(TOKEN);
        await dead.getByRole('button', { name: 'Discard these 2' }).click();
        await dead.locator('#outcome').waitFor();
        expect(await dead.locator('#outcome').textContent()).toContain('Discarded 2 dead letter(s)');
        expect(await Promise.all(['m3', 'm4', 'm5', 'm6'].map(stateOf))).toEqual(['dead', 'gone', 'gone', 'dead']);
        await dead.screenshot({ path: await shots('discarded'), fullPage: true });
        await dead.close();
      },
    );

    it("shows the inbox's processed counts and consumer-side dead letters, deletes one and replays one to its queue", async () => {
      const box = inbox();
      const inboxQueue = randomName('txoutbox-dashboard-inbox');
      await withChannel((channel) => channel.assertQueue(inboxQueue, { durable: true }));
      const replays = await QueueConsumer.start(inboxQueue);
      try {
        for (const id of ['p1', 'p2', 'p3']) {
          await h.db
            .transaction()
            .execute((trx) => box.processOnce(trx, { consumer: 'billing', messageId: id }, () => undefined));
        }
        const letter = (id: string, source = 'rabbitmq') => ({
          consumer: 'billing',
          messageId: id,
          source,
          destination: source === 'rabbitmq' ? inboxQueue : 'ORDERS/billing',
          topic,
          payload: Buffer.from(JSON.stringify({ id, note: XSS })),
          contentType: 'application/json',
          headers: { 'txoutbox-inbox-attempts': '5', 'x-tenant': 'acme' },
          error: `handler failed on ${id}: ${XSS}`,
          attempts: 5,
        });
        for (const [id, source] of [
          ['d1', 'rabbitmq'],
          ['d2', 'rabbitmq'],
          ['n1', 'nats'],
        ] as const) {
          await box.recordDeadLetter(h.db, letter(id, source));
        }
        const seqOf = async (id: string) => (await box.deadLetters(h.db)).find((l) => l.messageId === id)!.seq;
        const page = await open('/inbox');
        await page.locator('#processed').waitFor();
        expect(await page.locator('#processed').textContent()).toMatch(/billing\s*3/);
        expect(await page.locator('#inbox-dead tbody tr').count()).toBe(3);
        expect(await page.locator('main img, main script').count()).toBe(0);
        await page.screenshot({ path: await shots('inbox'), fullPage: true });

        // Delete d1: the confirmation names exactly it.
        const d1 = await seqOf('d1');
        await page.locator(`tr[data-seq="${d1}"] input[type="checkbox"]`).check();
        await page.getByRole('button', { name: 'Delete selected…' }).click();
        await page.locator('#confirm-rows').waitFor();
        expect(
          await page.locator('#confirm-rows tbody tr').evaluateAll((r) => r.map((row) => row.getAttribute('data-seq'))),
        ).toEqual([d1]);
        await page.locator('input[name="token"]').fill(TOKEN);
        await page.getByRole('button', { name: 'Delete these 1' }).click();
        await page.locator('#outcome').waitFor();
        expect(await page.locator('#outcome').textContent()).toContain('Deleted 1 dead letter(s)');
        expect((await box.deadLetters(h.db)).map((l) => l.messageId)).toEqual(['d2', 'n1']);

        // Replay d2 and n1: n1 came from NATS and is left out, named with the reason; d2 goes back to its queue.
        const [d2, n1] = [await seqOf('d2'), await seqOf('n1')];
        await page.goto(`${base}/inbox`);
        await page.locator(`tr[data-seq="${d2}"] input[type="checkbox"]`).check();
        await page.locator(`tr[data-seq="${n1}"] input[type="checkbox"]`).check();
        await page.getByRole('button', { name: 'Replay selected…' }).click();
        await page.locator('#confirm-rows').waitFor();
        expect(
          await page.locator('#confirm-rows tbody tr').evaluateAll((r) => r.map((row) => row.getAttribute('data-seq'))),
        ).toEqual([d2]);
        expect(await page.locator('#refusals').textContent()).toContain(
          `${n1}: a nats dead letter is replayed from its consumer`,
        );
        await page.screenshot({ path: await shots('inbox-confirm-replay'), fullPage: true });
        await page.locator('input[name="token"]').fill(TOKEN);
        await page.getByRole('button', { name: 'Replay these 1' }).click();
        await page.locator('#outcome').waitFor();
        expect(await page.locator('#outcome').textContent()).toContain('Replayed 1 dead letter(s)');
        await waitFor(() => replays.received().length === 1, 20_000, 'the replayed message in its queue');
        const [replayed] = replays.received();
        expect(replayed!.id).toBe('d2');
        expect(JSON.parse(replayed!.payload.toString('utf8'))).toEqual({ id: 'd2', note: XSS });
        // The consumer's retry bookkeeping is not carried over: it starts afresh.
        expect(replayed!.headers['txoutbox-inbox-attempts']).toBeUndefined();
        expect(replayed!.headers['x-tenant']).toBe('acme');
        expect((await box.deadLetters(h.db)).map((l) => l.messageId)).toEqual(['n1']);
        await page.close();
      } finally {
        await replays.close();
        await withChannel((channel) => channel.deleteQueue(inboxQueue)).catch(() => {});
      }
    });

    it('stops its relay (and dashboard) cleanly', async () => {
      relay.kill('SIGTERM');
      expect((await relay.exited).code).toBe(0);
      if (dashboard !== null) {
        dashboard.kill('SIGTERM');
        expect((await dashboard.exited).code).toBe(0);
      }
    });
  },
);

/** The ids a confirmation page names. */
async function confirmed(page: Page): Promise<(string | null)[]> {
  return page.locator('#confirm-rows tbody tr').evaluateAll((rows) => rows.map((row) => row.getAttribute('data-id')));
}

/**
 * A page of another origin (another port) whose form posts to the dashboard at once, with the right token: a
 * cross-site request forgery that knows the token must still be refused.
 */
async function crossSiteForm(action: string, fields: Record<string, string>): Promise<{ url: string; close(): Promise<void> }> {
  const escape = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const inputs = Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${escape(name)}" value="${escape(value)}">`)
    .join('');
  const server: Server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end(`<form method="post" action="${escape(action)}">${inputs}</form><script>document.forms[0].submit()</script>`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://localhost:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // The browser keeps its connection open; close() alone would wait for it.
        server.closeAllConnections();
      }),
  };
}
