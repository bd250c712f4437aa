import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { createOutbox } from '../../src/index.js';
import { header, WebhookReceiver } from '../support/brokers/http-fixture.js';
import { cliWorkspace, type CliProcess, type CliWorkspace } from '../support/cli.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

interface Row {
  seq: string;
  id: string;
  state: string;
  attempts: number;
  ready: boolean | null;
  last_error: string | null;
  created_at: Date;
  payload: Buffer;
  headers: Record<string, string>;
}

/**
 * `dead retry` for a table in mode logical: the slot streams inserts only, so a retried dead letter is inserted
 * again (new seq, same id), and under block-key the messages parked behind it come back with it, in order.
 */
describe('txoutbox dead retry in mode logical (the CLI against PostgreSQL and a webhook receiver)', () => {
  const schema = `cli_dead_logical_${randomBytes(4).toString('hex')}`;
  const slot = `${schema}_s`;
  const publication = `${schema}_p`;
  const topic = `invoices.${randomBytes(3).toString('hex')}`;
  let db: Kysely<any>;
  let cli: CliWorkspace;
  const receiver = new WebhookReceiver();
  const outbox = createOutbox({ dialect: 'postgres', schema, mode: 'logical' });

  beforeAll(async () => {
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    await receiver.start();
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'billing', dialect: 'postgres', url: inject('pgUrl'), schema }],
      brokers: { hook: { type: 'http', url: receiver.url('/gate/{topic}') } },
      relay: { mode: 'logical', slot, publication, deadLetterPolicy: 'block-key' },
      http: { enabled: false },
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

  beforeEach(async () => {
    await sql`DELETE FROM ${sql.id(schema, 'txoutbox')}`.execute(db);
  });

  const rows = async () =>
    (
      await sql<Row>`
        SELECT o.seq::text AS seq, id, state, attempts, ready, last_error, created_at, payload, headers
        FROM ${sql.id(schema, 'txoutbox')} AS o ORDER BY o.seq`.execute(db)
    ).rows;
  const accepted = () => receiver.accepted.map((request) => header(request.headers, 'txoutbox-id'));

  /** A running relay dead-letters a poison head (the endpoint rejects it) and parks its follower behind it. */
  async function poisonAndPark(relay: CliProcess, key: string) {
    receiver.gate('reject');
    const [head, follower] = await db.transaction().execute((trx) =>
      outbox.enqueue(trx, [
        { topic, key, payload: { n: 1 }, headers: { 'x-tenant': 'acme' } },
        { topic, key, payload: { n: 2 } },
      ]),
    );
    await relay.waitForLog((line) => line.msg === 'dead-lettered (txoutbox dead list)' && line.messageId === head!.id);
    await waitFor(async () => (await rows()).every((row) => row.state === 'dead'), 15_000, 'both rows to be marked dead');
    const parked = await rows();
    expect(parked.map((row) => [row.id, row.state])).toEqual([
      [head!.id, 'dead'],
      [follower!.id, 'dead'],
    ]);
    expect(parked[1]!.last_error).toBe(`waiting behind dead message ${head!.id}`);
    receiver.gate('open');
    return { head: head!.id, follower: follower!.id };
  }

  const retry = async (id: string) => {
    const retried = await cli.run(['dead', 'retry', id]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain('Retried 2 dead letter(s) (1 of them were waiting behind the ones chosen)');
  };

  const started = async () => {
    const relay = cli.spawn(['relay']);
    await relay.waitForLog((line) => line.msg === `streaming from slot ${slot}`);
    return relay;
  };
  const stopped = async (relay: CliProcess) => {
    relay.kill('SIGTERM');
    expect((await relay.exited).code).toBe(0);
  };

  it('a poison head goes dead with its follower parked; retrying the head republishes both, in order, through the running relay', async () => {
    const relay = await started();
    const from = receiver.accepted.length;
    const { head, follower } = await poisonAndPark(relay, 'inv-1');
    await retry(head);
    await waitFor(() => accepted().length === from + 2, 15_000, 'the retried head and its follower at the endpoint');
    expect(accepted().slice(from)).toEqual([head, follower]);
    await waitFor(async () => (await rows()).length === 0, 15_000, 'the sent rows to be deleted');
    expect(JSON.parse((await cli.run(['dead', 'list', '--json'])).stdout)).toEqual({ deadLetters: [] });
    await stopped(relay);
  });

  it('a poison head goes dead with its follower parked; retried while the relays are stopped, both go out in order when one starts', async () => {
    const relay = await started();
    const from = receiver.accepted.length;
    const { head, follower } = await poisonAndPark(relay, 'inv-2');
    await stopped(relay);
    await retry(head);
    const next = await started();
    await waitFor(() => accepted().length === from + 2, 15_000, 'the retried head and its follower at the endpoint');
    expect(accepted().slice(from)).toEqual([head, follower]);
    await waitFor(async () => (await rows()).length === 0, 15_000, 'the sent rows to be deleted');
    expect(JSON.parse((await cli.run(['dead', 'list', '--json'])).stdout)).toEqual({ deadLetters: [] });
    await stopped(next);
  });

  it('inserts retried rows again: new seqs in the old order, same id, payload, headers and enqueue time, attempts 0', async () => {
    // No relay runs: the rows stay as retry wrote them.
    const [a, b, c] = await db.transaction().execute((trx) =>
      outbox.enqueue(trx, [
        { topic, key: 'K', payload: 'a', headers: { h: '1' } },
        { topic, key: 'K', payload: 'b' },
        { topic, payload: 'keyless' },
      ]),
    );
    await sql`UPDATE ${sql.id(schema, 'txoutbox')} SET state = 'dead', ready = false, attempts = 3, last_error = 'boom'`.execute(db);
    const before = await rows();
    const retried = await cli.run(['dead', 'retry', a!.id, c!.id, '--yes']);
    expect(retried.code, retried.stderr).toBe(0);
    const after = await rows();
    expect(after.map((row) => row.id)).toEqual([a!.id, b!.id, c!.id]);
    for (const [index, row] of after.entries()) {
      const old = before[index]!;
      expect(BigInt(row.seq)).toBeGreaterThan(BigInt(before[2]!.seq));
      expect(row).toMatchObject({ state: 'pending', attempts: 0, ready: index === 2 ? true : null, last_error: 'boom' });
      expect(row.payload).toEqual(old.payload);
      expect(row.headers).toEqual(old.headers);
      expect(row.created_at).toEqual(old.created_at);
    }
  });

  it('discarding a dead head deletes it and inserts the messages parked behind it again, so its key moves on', async () => {
    const [head, follower] = await db.transaction().execute((trx) =>
      outbox.enqueue(trx, [
        { topic, key: 'D', payload: 'head' },
        { topic, key: 'D', payload: 'follower' },
      ]),
    );
    await sql`UPDATE ${sql.id(schema, 'txoutbox')} SET state = 'dead', ready = false`.execute(db);
    const discarded = await cli.run(['dead', 'discard', head!.id]);
    expect(discarded.code, discarded.stderr).toBe(0);
    expect(discarded.stdout).toContain('Discarded 1 dead letter(s)');
    expect((await rows()).map((row) => [row.id, row.state, row.ready])).toEqual([[follower!.id, 'pending', null]]);
  });
});
