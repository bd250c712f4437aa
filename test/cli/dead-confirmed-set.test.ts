import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { deadActCommand, type DeadIo } from '../../src/cli/commands/dead.js';
import { parseConfig, type LoadedConfig } from '../../src/cli/config.js';
import { MemoryBroker, type OutboxMessage } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { clearTables, drain, testRelay } from '../support/relay-helpers.js';

/** `dead retry|discard` acts on the dead letters the person confirmed, and counts them without reading payloads. */
describe('txoutbox dead retry|discard on PostgreSQL', () => {
  let h: Harness;
  let loaded: LoadedConfig;
  beforeAll(async () => {
    h = await createHarness('postgres');
    loaded = parseConfig(
      {
        databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema: h.schema }],
        brokers: { mem: { type: 'memory' } },
      },
      {},
    );
  });
  afterAll(async () => h?.destroy());
  beforeEach(async () => clearTables(h));

  /** Enqueues the messages and lets the relay dead-letter them all. */
  const bury = async (messages: OutboxMessage[], db = h.db) => {
    await db.transaction().execute((trx) => h.outbox.enqueue(trx, messages));
    await drain(testRelay({ ...h, db }, new MemoryBroker().fail({ kind: 'permanent', error: 'poison' })));
  };
  const io = (confirm: DeadIo['confirm']): DeadIo & { lines: string[] } => {
    const lines: string[] = [];
    return { out: (line) => lines.push(line), err: (line) => lines.push(line), confirm, progress: false, lines };
  };
  const states = async () => Object.fromEntries((await h.rows()).map((row) => [row.id, row.state]));

  for (const action of ['retry', 'discard'] as const) {
    it(`${action} leaves alone a dead letter that matched only after the person confirmed the count`, async () => {
      await bury([
        { id: 'a1', topic: 'orders', payload: 1 },
        { id: 'a2', topic: 'orders', payload: 2 },
      ]);
      let asked = '';
      const terminal = io(async (question) => {
        asked = question;
        // While the person reads the question, another message of the topic dies.
        await bury([{ id: 'late', topic: 'orders', payload: 3 }]);
        return true;
      });
      await deadActCommand(loaded, action, [], { topic: 'orders' }, terminal);
      expect(asked).toMatch(/ 2 dead letters /);
      expect(terminal.lines.join('\n')).toMatch(action === 'retry' ? /Retried 2 dead letter/ : /Discarded 2 dead letter/);
      expect(await states()).toEqual(action === 'retry' ? { a1: 'pending', a2: 'pending', late: 'dead' } : { late: 'dead' });
    });
  }

  it('counts the dead letters without reading their payloads', async () => {
    // Incompressible payloads of 512 KiB live out of line (TOAST): reading one shows in the TOAST block counters.
    // Written through connections that are then closed: a backend publishes its counters for sure when it exits.
    const writer = new Kysely<any>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }),
    });
    await bury(
      Array.from({ length: 4 }, (_, i) => ({
        id: `big-${i}`,
        topic: 'orders',
        payload: randomBytes(512 * 1024),
        contentType: 'application/octet-stream',
      })),
      writer,
    );
    await writer.destroy();
    const toastBlocks = async () => {
      // Backends publish their counters when they go idle or exit; read a fresh snapshot.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const { rows } = await sql<{ blocks: string }>`
        SELECT pg_stat_clear_snapshot()::text, (coalesce(toast_blks_hit, 0) + coalesce(toast_blks_read, 0))::text AS blocks
        FROM pg_statio_all_tables WHERE schemaname = ${h.schema} AND relname = 'txoutbox'`.execute(h.db);
      return Number(rows[0]!.blocks);
    };
    const before = await toastBlocks();
    const terminal = io(null);
    await deadActCommand(loaded, 'retry', [], { topic: 'orders', dryRun: true }, terminal);
    expect(terminal.lines).toEqual([expect.stringMatching(/^Would retry 4 dead letter\(s\)/)]);
    expect((await toastBlocks()) - before).toBe(0);
  });
});
