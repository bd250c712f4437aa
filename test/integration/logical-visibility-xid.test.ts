import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nearestFullXid, visibleTransactions } from '../../src/relay/logical/visibility.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * pgoutput carries 32-bit transaction ids; pg_visible_in_snapshot wants the full 64-bit one. The relay takes the
 * one nearest the snapshot's xmax, which must hold on both sides of an epoch boundary (the server cannot be moved
 * to one in a test, so the arithmetic is run on it with chosen xmax values).
 */
describe('the logical relay reading 32-bit transaction ids', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());

  const EPOCH = 2n ** 32n;
  const full = async (xid: bigint, xmax: bigint) =>
    BigInt(
      (
        await sql<{
          full: string;
        }>`SELECT (${nearestFullXid(sql`${String(xid)}::int8`, sql`${String(xmax)}::int8`)})::text AS full`.execute(h.db)
      ).rows[0]!.full,
    );

  it.each([
    ['in xmax’s epoch, below it (committed)', 995n, 1000n, 995n],
    ['in xmax’s epoch, just above it (still finishing)', 1005n, 1000n, 1005n],
    ['from the epoch before, xmax having just wrapped', EPOCH - 10n, EPOCH + 5n, EPOCH - 10n],
    ['from the next epoch, xmax about to wrap', 3n, EPOCH - 5n, EPOCH + 3n],
    ['in a later epoch, below xmax', 995n, 7n * EPOCH + 1000n, 7n * EPOCH + 995n],
    ['in epoch 0, far above xmax (never the epoch before 0)', EPOCH - 300n, 100n, EPOCH - 300n],
  ])('%s', async (_, xid, xmax, expected) => {
    expect(await full(xid, xmax)).toBe(expected);
  });

  it('says which of these transactions the current snapshot sees', async () => {
    const { rows: committed } = await sql<{ xid: string }>`SELECT pg_current_xact_id()::text AS xid`.execute(h.db);
    const done = Number(BigInt(committed[0]!.xid) % EPOCH);
    const open = await h.db.startTransaction().execute();
    try {
      const { rows } = await sql<{ xid: string }>`SELECT pg_current_xact_id()::text AS xid`.execute(open);
      const running = Number(BigInt(rows[0]!.xid) % EPOCH);
      expect(await visibleTransactions(h.db, [done, running])).toEqual(new Set([done]));
    } finally {
      await open.rollback().execute();
    }
  });
});
