import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox, type OutboxMessage } from '../../src/index.js';
import { header, WebhookReceiver } from '../support/brokers/http-fixture.js';
import { cliWorkspace, metricValue, type CliProcess, type CliWorkspace } from '../support/cli.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

interface Readiness {
  status: number;
  body: { ready: boolean; checks: { kind: string; name: string; ok: boolean; error?: string }[] };
}

/**
 * The sidecar relaying a table in mode logical (PostgreSQL, wal_level = logical) to an HTTP endpoint: migrate makes
 * the publication, the relay streams the slot, /readyz says whether this sidecar holds it, /metrics shows its lag.
 */
describe('txoutbox relay in mode logical (the CLI as a child process, PostgreSQL, a webhook receiver)', () => {
  const schema = `cli_logical_${randomBytes(4).toString('hex')}`;
  const slot = `${schema}_s`;
  const publication = `${schema}_p`;
  const topic = `orders.${randomBytes(3).toString('hex')}`;
  const table = `${schema}.txoutbox`;
  const labels = { database: 'orders', table, slot };
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
      // Any WAL kept is over 1 byte: the warning must come, once.
      relay: { mode: 'logical', slot, publication, standbyRetryMs: 100, maxRetainedWalBytes: 1 },
      http: { port: 0 },
      metrics: { backlogIntervalMs: 100 },
    });
    const migrated = await cli.run(['migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
    expect(migrated.stdout).toContain(`orders/${table}: publication ${publication} created`);
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
  const accepted = () => receiver.accepted.map((request) => header(request.headers, 'txoutbox-id'));
  const readiness = async (http: string): Promise<Readiness> => {
    const response = await fetch(`${http}/readyz`);
    return { status: response.status, body: (await response.json()) as Readiness['body'] };
  };
  const metric = async (http: string, name: string) => metricValue(await (await fetch(`${http}/metrics`)).text(), name, labels);
  const slotCheck = (readyz: Readiness) => readyz.body.checks.find((check) => check.kind === 'slot');
  const stop = async (relay: CliProcess) => {
    relay.kill('SIGTERM');
    const exit = await relay.exited;
    expect(exit.code, exit.stderr).toBe(0);
  };

  it('streams what commits in key order; only the sidecar holding the slot is ready, and a standby takes over', async () => {
    const first = cli.spawn(['relay']);
    const firstHttp = await first.httpUrl();
    await waitFor(async () => (await readiness(firstHttp)).status === 200, 15_000, 'the first sidecar to stream its slot');
    expect(slotCheck(await readiness(firstHttp))).toEqual({ kind: 'slot', name: `orders/${table}`, ok: true });

    // A second sidecar on the same table stands by: alive, not ready.
    const second = cli.spawn(['relay']);
    const secondHttp = await second.httpUrl();
    const standby = await readiness(secondHttp);
    expect(standby.status).toBe(503);
    expect(slotCheck(standby)).toMatchObject({ ok: false, error: expect.stringContaining(`streams none of its slots (${slot})`) });
    expect((await fetch(`${secondHttp}/healthz`)).status).toBe(200);

    // Any WAL kept is over relay.maxRetainedWalBytes (1 byte): a warning when it crosses, not on every read.
    const over = (relay: CliProcess) => relay.logs().filter((line) => String(line.msg).includes('over relay.maxRetainedWalBytes'));
    const under = (relay: CliProcess) => relay.logs().filter((line) => String(line.msg).includes('than relay.maxRetainedWalBytes again'));
    await first.waitForLog((line) => String(line.msg).includes('over relay.maxRetainedWalBytes') && line.slot === slot);

    await commit([1, 2, 3].map((n) => ({ id: `${schema}-k${n}`, topic, key: 'K', payload: n })));
    await commit([{ id: `${schema}-free`, topic, payload: 'no key' }]);
    await waitFor(() => accepted().length === 4, 15_000, 'four messages at the endpoint');
    expect(accepted().filter((id) => id!.includes('-k'))).toEqual([`${schema}-k1`, `${schema}-k2`, `${schema}-k3`]);
    // The counter moves on the reads after the warning: those did not warn again.
    await waitFor(async () => (await metric(firstHttp, 'txoutbox_messages_streamed_total')) === 4, 10_000, 'the streamed counter');
    expect(await metric(secondHttp, 'txoutbox_messages_streamed_total')).toBe(0);
    expect(await metric(firstHttp, 'txoutbox_slot_retained_wal_bytes')).toBeGreaterThan(1);
    expect(over(first).length).toBe(under(first).length + 1);
    expect(over(first)[0]).toMatchObject({ level: 'warn', database: 'orders', table, slot, maxRetainedWalBytes: 1 });

    await stop(first);
    await waitFor(async () => (await readiness(secondHttp)).status === 200, 15_000, 'the standby to take the slot over');
    await commit([{ id: `${schema}-k4`, topic, key: 'K', payload: 4 }]);
    await waitFor(() => accepted().includes(`${schema}-k4`), 15_000, 'the standby to publish');
    expect(second.logs().some((line) => line.msg === `streaming from slot ${slot}`)).toBe(true);
    await stop(second);
  });

  it('shows the lag of a publish the endpoint holds, in bytes and seconds, and none once it is acknowledged', async () => {
    const relay = cli.spawn(['relay']);
    const http = await relay.httpUrl();
    await waitFor(async () => (await readiness(http)).status === 200, 15_000, 'the sidecar to stream its slot');
    receiver.gate('hold');
    await commit([{ id: `${schema}-held`, topic, key: 'H', payload: 'held' }]);
    await waitFor(() => receiver.heldAtGate() > 0, 15_000, 'the publish to reach the endpoint');
    // Unconfirmed: its transaction's commit is the oldest the slot still holds.
    await waitFor(async () => (await metric(http, 'txoutbox_slot_lag_seconds')) > 0, 10_000, 'lag in seconds');
    expect(await metric(http, 'txoutbox_slot_lag_bytes')).toBeGreaterThan(0);
    receiver.gate('open');
    await waitFor(() => accepted().includes(`${schema}-held`), 15_000, 'the held message to be acknowledged');
    await waitFor(async () => (await metric(http, 'txoutbox_slot_lag_seconds')) === 0, 10_000, 'the lag to go back to 0');
    await stop(relay);
  });
});
