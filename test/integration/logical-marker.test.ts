import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tableNames } from '../../src/dialects/identifiers.js';
import { Marker } from '../../src/relay/logical/marker.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * The logical relay's marks. PostgreSQL sends a transaction to a slot once its commit is in the WAL, a moment before
 * the committing session makes it visible; a mark written in that moment finds no row. Found by the chaos suite:
 * whole transactions published, their slot confirmed, their rows left pending for ever.
 */
describe('the logical relay marking rows', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());

  it('writes a mark again until its row is visible, and only then says it is done', async () => {
    const errors: unknown[] = [];
    const marker = new Marker(h.db, tableNames('txoutbox', h.schema), { retainSent: false, asyncCommit: false, token: 't', flushMs: 1, maxBatch: 100 }, (error) =>
      errors.push(error),
    );
    // A row whose transaction has not committed yet: not visible to the marker's transactions.
    const open = await h.db.startTransaction().execute();
    await h.outbox.enqueue(open, { id: 'late', topic: 't', key: 'k', payload: 1 });
    const { rows } = await sql<{ seq: string; xid: string }>`
      SELECT seq::text AS seq, xmin::text AS xid FROM ${sql.id(h.schema, 'txoutbox')} WHERE id = 'late'`.execute(open);
    // As the slot would stream it: with the id of the transaction that inserted it.
    const xid = Number(rows[0]!.xid);
    let done = false;
    marker.add({ seq: rows[0]!.seq, kind: 'sent', xid }, () => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 40));
    expect(done).toBe(false);
    await open.commit().execute();
    const deadline = Date.now() + 5000;
    while (!done && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(done).toBe(true);
    expect(await h.rows()).toEqual([]);
    expect(marker.idle).toBe(true);
    expect(errors).toEqual([]);
  });

  it('gives up on a row that is gone (marked before), so the slot can move on', async () => {
    const marker = new Marker(h.db, tableNames('txoutbox', h.schema), { retainSent: false, asyncCommit: false, token: 't', flushMs: 1, maxBatch: 100 }, () => undefined);
    let done = false;
    marker.add({ seq: '987654321', kind: 'sent' }, () => (done = true));
    const deadline = Date.now() + 5000;
    while (!done && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(done).toBe(true);
  });
});
