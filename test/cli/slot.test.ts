import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createRelay, MemoryBroker, type LogicalRelay } from '../../src/index.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { dropSlotsAndPublications } from '../support/logical-cleanup.js';
import { waitFor } from '../support/relay-helpers.js';

interface SlotReport {
  database: string;
  table: string;
  slot: string;
  exists: boolean;
  active: boolean;
  activePid: number | null;
  confirmedFlushLsn: string | null;
  retainedWalBytes: number | null;
  lagBytes: number | null;
  walStatus: string | null;
}

/** `txoutbox slot create|status|drop` against PostgreSQL (wal_level = logical), for a table in mode logical. */
describe('txoutbox slot (the CLI against PostgreSQL)', () => {
  const schema = `cli_slot_${randomBytes(4).toString('hex')}`;
  const slot = `${schema}_s`;
  const publication = `${schema}_p`;
  let db: Kysely<any>;
  let cli: CliWorkspace;
  let relay: LogicalRelay | undefined;

  beforeAll(async () => {
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [
        {
          name: 'orders',
          dialect: 'postgres',
          url: inject('pgUrl'),
          schema,
          tables: [
            { table: 'txoutbox', relay: { mode: 'logical', slot, publication, partitions: 2 } },
            { table: 'polled' },
          ],
        },
      ],
      brokers: { mem: { type: 'memory' } },
      http: { enabled: false },
    });
  });
  afterAll(async () => {
    await relay?.stop({ drainMs: 0 });
    await cli?.cleanup();
    await dropSlotsAndPublications(db, schema);
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db?.destroy();
  });

  const status = async () => {
    const result = await cli.run(['slot', 'status', '--json']);
    expect(result.code, result.stderr).toBe(0);
    return (JSON.parse(result.stdout) as { slots: SlotReport[] }).slots;
  };
  const serverSlots = async () =>
    (
      await sql<{ slot_name: string }>`
        SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE ${`${schema}%`} ORDER BY slot_name`.execute(db)
    ).rows.map((row) => row.slot_name);

  it('migrate creates the publications of the logical table only; slot create makes the slots, once', async () => {
    const migrated = await cli.run(['migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
    expect(migrated.stdout).toContain(`orders/${schema}.txoutbox: publication ${publication}_0 created, ${publication}_1 created`);
    expect(migrated.stdout).not.toContain(`orders/${schema}.polled: publication`);
    const again = await cli.run(['migrate']);
    expect(again.stdout).toContain(`orders/${schema}.txoutbox: publication ${publication}_0 exists, ${publication}_1 exists`);

    // Before create: the polled table has no slot, the logical one's do not exist yet.
    expect((await status()).map((s) => [s.table, s.slot, s.exists])).toEqual([
      [`${schema}.txoutbox`, `${slot}_0`, false],
      [`${schema}.txoutbox`, `${slot}_1`, false],
    ]);

    const created = await cli.run(['slot', 'create']);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout.trim()).toBe(
      `orders/${schema}.txoutbox: publication ${publication}_0 exists, publication ${publication}_1 exists, ` +
        `slot ${slot}_0 created, slot ${slot}_1 created`,
    );
    expect(await serverSlots()).toEqual([`${slot}_0`, `${slot}_1`]);
    const twice = await cli.run(['slot', 'create', '--table', 'txoutbox']);
    expect(twice.stdout).toContain(`slot ${slot}_0 exists, slot ${slot}_1 exists`);

    const [first] = await status();
    expect(first).toMatchObject({ database: 'orders', slot: `${slot}_0`, exists: true, active: false, activePid: null, walStatus: 'reserved' });
    expect(first!.confirmedFlushLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(first!.retainedWalBytes).toBeGreaterThanOrEqual(0);
    expect(first!.lagBytes).toBeGreaterThanOrEqual(0);
    const text = await cli.run(['slot', 'status']);
    expect(text.stdout).toMatch(new RegExp(`orders\\s+${schema}\\.txoutbox\\s+${slot}_0\\s+yes\\s+no\\s+`));
  });

  it('drop refuses while a relay streams from a slot (exit 7, nothing dropped), and drops them once it stopped', async () => {
    relay = createRelay({ db, dialect: 'postgres', schema, broker: new MemoryBroker(), mode: 'logical', slot, publication, partitions: 2 });
    await relay.start();
    await waitFor(() => relay!.status().partitions.every((p) => p.owned), 15_000, 'the relay to stream both slots');
    const active = await status();
    expect(active.map((s) => s.active)).toEqual([true, true]);
    expect(active[0]!.activePid).toEqual(expect.any(Number));

    const refused = await cli.run(['slot', 'drop']);
    expect(refused.code).toBe(7);
    expect(refused.stderr).toContain(`Not dropping: a relay streams from ${slot}_0 (server process ${active[0]!.activePid})`);
    expect(refused.stderr).toContain('No slot was dropped.');
    expect(await serverSlots()).toEqual([`${slot}_0`, `${slot}_1`]);

    await relay.stop({ drainMs: 0 });
    relay = undefined;
    // The server frees a slot once its replication connection has gone.
    await waitFor(async () => (await status()).every((s) => !s.active), 15_000, 'the slots to be released');
    const dropped = await cli.run(['slot', 'drop']);
    expect(dropped.code, dropped.stderr).toBe(0);
    expect(dropped.stdout).toContain(`orders/${schema}.txoutbox: slot ${slot}_0 dropped`);
    expect(dropped.stdout).toContain(`orders/${schema}.txoutbox: slot ${slot}_1 dropped`);
    expect(await serverSlots()).toEqual([]);
    expect((await cli.run(['slot', 'drop'])).stdout).toContain(`slot ${slot}_0 does not exist`);
  });

  it('says so when the selection has no table in mode logical (exit 2)', async () => {
    const result = await cli.run(['slot', 'status', '--table', 'polled']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('No configured table named "polled" is in mode logical');
  });
});
