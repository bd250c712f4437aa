import { randomBytes } from 'node:crypto';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox, createRelay, MemoryBroker, migrate, type DialectName } from '../../src/index.js';
import { dialectFor } from '../../src/dialects/index.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';

describe.each<DialectName>(['postgres', 'mysql'])('txoutbox doctor on %s', (dialect) => {
  const schema = `cli_doctor_${randomBytes(4).toString('hex')}`;
  const url = dialect === 'postgres' ? inject('pgUrl') : inject('mysqlUrl');
  let db: Kysely<any>;
  let cli: CliWorkspace;
  const outbox = createOutbox({ dialect, schema });
  const table = () => sql.id(schema, 'txoutbox');
  const yes = dialect === 'postgres' ? sql`true` : sql`1`;
  const no = dialect === 'postgres' ? sql`false` : sql`0`;

  beforeAll(async () => {
    db = new Kysely<any>({
      dialect:
        dialect === 'postgres'
          ? new PostgresDialect({ pool: new pg.Pool({ connectionString: url }) })
          : new MysqlDialect({ pool: mysql.createPool({ uri: url, timezone: 'Z' }) }),
    });
    await migrate(db, { dialect, schema });
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'main', dialect, url, schema }],
      brokers: { memory: { type: 'memory' } },
      http: { enabled: false },
    });
  });
  afterAll(async () => {
    await cli?.cleanup();
    await sql`DROP ${dialect === 'postgres' ? sql`SCHEMA` : sql`DATABASE`} IF EXISTS ${sql.id(schema)} ${dialect === 'postgres' ? sql`CASCADE` : sql``}`.execute(
      db,
    );
    await db?.destroy();
  });

  const heads = async () => {
    const { rows } = await sql<{
      id: unknown;
      msg_key: unknown;
    }>`SELECT id, msg_key FROM ${table()} WHERE ready = ${yes} ORDER BY seq`.execute(db);
    return rows.map((row) => String(row.id));
  };

  it('finds a key with no head and one with two, repairs them (not with --dry-run), and the relay then sends each key in order', async () => {
    await db.transaction().execute((trx) =>
      outbox.enqueue(
        trx,
        ['k1', 'k2', 'k3', 'l1', 'l2', 'l3'].map((id) => ({ id, topic: 't', key: id[0]!.toUpperCase(), payload: id })),
      ),
    );
    // Sequenced as a relay would, then broken by hand: K loses its head, L gets a second one.
    await dialectFor(dialect).relayStore(db, tableNames('txoutbox', schema)).claim({ count: 0, bytes: 0 }, 'doctor-test', 1000);
    expect(await heads()).toEqual(['k1', 'l1']);
    await sql`UPDATE ${table()} SET ready = ${no} WHERE id = ${dialect === 'postgres' ? 'k1' : Buffer.from('k1')}`.execute(db);
    await sql`UPDATE ${table()} SET ready = ${yes} WHERE id = ${dialect === 'postgres' ? 'l3' : Buffer.from('l3')}`.execute(db);

    const dry = await cli.run(['doctor', '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    const found = JSON.parse(dry.stdout) as {
      dryRun: boolean;
      tables: { problems: { key: string; kind: string }[]; repaired: number }[];
    };
    expect(found.dryRun).toBe(true);
    expect(found.tables[0]!.problems.map((p) => [p.key, p.kind])).toEqual([
      ['K', 'no-head'],
      ['L', 'several-heads'],
    ]);
    expect(found.tables[0]!.repaired).toBe(0);
    expect(await heads()).toEqual(['l1', 'l3']);

    const text = await cli.run(['doctor', '--dry-run']);
    expect(text.stdout).toContain('--dry-run changed nothing');

    const repair = await cli.run(['doctor']);
    expect(repair.code, repair.stderr).toBe(0);
    expect(repair.stdout).toContain('Repaired 2 key(s)');
    expect(await heads()).toEqual(['k1', 'l1']);
    expect((await cli.run(['doctor'])).stdout).toContain('Every key is in order');

    const broker = new MemoryBroker();
    const relay = createRelay({ db, dialect, schema, broker });
    while ((await relay.runOnce()).claimed > 0);
    const order = (key: string) =>
      broker
        .received()
        .filter((m) => m.key === key)
        .map((m) => m.id);
    expect(order('K')).toEqual(['k1', 'k2', 'k3']);
    expect(order('L')).toEqual(['l1', 'l2', 'l3']);
  });
});
