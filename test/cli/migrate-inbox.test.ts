import { randomBytes } from 'node:crypto';
import { Kysely, MysqlDialect, PostgresDialect, sql } from 'kysely';
import mysql from 'mysql2';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createInbox } from '../../src/index.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';

/** `txoutbox migrate` for inbox tables, with the real CLI as a child process, on PostgreSQL and MariaDB. */
describe('txoutbox migrate with inboxes (PostgreSQL + MariaDB)', () => {
  const suffix = randomBytes(4).toString('hex');
  const pgSchema = `cli_inbox_pg_${suffix}`;
  const myDatabase = `cli_inbox_my_${suffix}`;
  let pgDb: Kysely<any>;
  let myDb: Kysely<any>;
  let cli: CliWorkspace;

  const env = () => ({ TEST_PG_URL: inject('pgUrl'), TEST_MYSQL_URL: inject('mysqlUrl') });
  // A PostgreSQL database with an outbox and an inbox, and a MariaDB one that only consumes (its inbox renamed).
  const mixed = {
    databases: [
      {
        name: 'orders-pg',
        dialect: 'postgres',
        url: '${TEST_PG_URL}',
        schema: pgSchema,
        tables: [{ table: 'txoutbox' }],
        inbox: {},
      },
      { name: 'shop-maria', dialect: 'mysql', url: '${TEST_MYSQL_URL}', inbox: { table: 'shop_inbox', schema: myDatabase } },
    ],
    brokers: { mem: { type: 'memory' } },
    http: { port: 0 },
  };
  const tablesIn = async (db: Kysely<any>, schema: string) => {
    const { rows } = await sql<{ name: string }>`
      SELECT table_name AS name FROM information_schema.tables WHERE table_schema = ${schema}`.execute(db);
    return rows.map((r) => r.name).sort();
  };

  beforeAll(async () => {
    pgDb = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    myDb = new Kysely<any>({ dialect: new MysqlDialect({ pool: mysql.createPool({ uri: inject('mysqlUrl'), timezone: 'Z' }) }) });
    cli = await cliWorkspace();
  });

  afterAll(async () => {
    await cli?.cleanup();
    await sql`DROP SCHEMA IF EXISTS ${sql.id(pgSchema)} CASCADE`.execute(pgDb);
    await sql`DROP DATABASE IF EXISTS ${sql.id(myDatabase)}`.execute(myDb);
    await pgDb?.destroy();
    await myDb?.destroy();
  });

  it('migrate --inbox creates only the inbox tables; migrate then adds the outbox; a second run changes nothing', async () => {
    await cli.writeConfig(mixed);
    const inboxOnly = await cli.run(['migrate', '--inbox'], env());
    expect(inboxOnly.stderr).toBe('');
    expect(inboxOnly.code).toBe(0);
    expect(inboxOnly.stdout.trim().split('\n')).toEqual([
      `orders-pg/${pgSchema}.txoutbox_inbox: inbox applied 001_create_inbox`,
      `shop-maria/${myDatabase}.shop_inbox: inbox applied 001_create_inbox`,
    ]);
    expect(await tablesIn(pgDb, pgSchema)).toEqual([
      'txoutbox_inbox',
      'txoutbox_inbox_dead',
      'txoutbox_inbox_migrations',
    ]);
    expect(await tablesIn(myDb, myDatabase)).toEqual([
      'shop_inbox',
      'shop_inbox_dead',
      'shop_inbox_migrations',
    ]);

    const both = await cli.run(['migrate'], env());
    expect(both.code).toBe(0);
    expect(both.stdout.trim().split('\n')).toEqual([
      `orders-pg/${pgSchema}.txoutbox: outbox applied 001_create_outbox, 002_relay_sequences_keys, 003_logical_slots, 004_logical_clean_stop, 005_logical_deferred`,
      `orders-pg/${pgSchema}.txoutbox_inbox: inbox up to date`,
      `shop-maria/${myDatabase}.shop_inbox: inbox up to date`,
    ]);
    expect(await tablesIn(pgDb, pgSchema)).toEqual(
      expect.arrayContaining(['txoutbox', 'txoutbox_migrations', 'txoutbox_inbox', 'txoutbox_inbox_dead']),
    );
    // The MariaDB database only consumes: no outbox table appeared there.
    expect((await tablesIn(myDb, myDatabase)).filter((name) => !name.startsWith('shop_inbox'))).toEqual([]);

    const again = await cli.run(['migrate'], env());
    expect(again.code).toBe(0);
    expect(again.stdout.trim().split('\n')).toEqual([
      `orders-pg/${pgSchema}.txoutbox: outbox up to date`,
      `orders-pg/${pgSchema}.txoutbox_inbox: inbox up to date`,
      `shop-maria/${myDatabase}.shop_inbox: inbox up to date`,
    ]);

    // The tables it made are the ones createInbox uses: a message id is processed once.
    const inbox = createInbox({ dialect: 'mysql', table: 'shop_inbox', schema: myDatabase });
    const deliver = () =>
      myDb.transaction().execute((trx) => inbox.processOnce(trx, { consumer: 'shop', messageId: 'm-1' }, () => 'applied'));
    expect(await deliver()).toEqual({ duplicate: false, result: 'applied' });
    expect(await deliver()).toEqual({ duplicate: true });
  });

  it('says so when a component is asked for that no selected database has, and exits 2', async () => {
    await cli.writeConfig(mixed);
    const outbox = await cli.run(['migrate', '--outbox', '--database', 'shop-maria'], env());
    expect(outbox.code).toBe(2);
    expect(outbox.stderr).toBe(
      'txoutbox: migrate --outbox: no database for database "shop-maria" has outbox tables (only inboxes).\n',
    );
    await cli.writeConfig({ ...mixed, databases: [{ ...mixed.databases[0], inbox: undefined }] });
    const inbox = await cli.run(['migrate', '--inbox'], env());
    expect(inbox.code).toBe(2);
    expect(inbox.stderr).toContain('migrate --inbox: no database in');
    expect(inbox.stderr).toContain('declares an inbox. Add `inbox: {}`');
  });

  it('relay skips a database that only has an inbox, and refuses a config where nothing has an outbox', async () => {
    await cli.writeConfig(mixed);
    expect((await cli.run(['migrate'], env())).code).toBe(0);
    const relay = cli.spawn(['relay'], env());
    await relay.httpUrl();
    expect(relay.logs().find((l) => l.database === 'shop-maria')).toMatchObject({
      msg: 'database shop-maria has only an inbox: nothing to relay there',
    });
    expect(relay.logs().find((l) => typeof l.msg === 'string' && l.msg.startsWith('relaying'))).toMatchObject({
      tables: [`orders-pg/${pgSchema}.txoutbox`],
    });
    relay.kill('SIGTERM');
    const exit = await relay.exited;
    expect(exit.code, JSON.stringify(exit)).toBe(0);

    await cli.writeConfig({ databases: [mixed.databases[1]] });
    for (const command of [['relay'], ['status']]) {
      const result = await cli.run(command, env());
      expect(result.code, command.join(' ')).toBe(2);
      expect(result.stderr).toMatch(/^txoutbox: Nothing to do: "shop-maria" has no outbox tables, only an inbox\./);
    }
    // migrate still works on it: the inbox is there already.
    const migrate = await cli.run(['migrate'], env());
    expect(migrate.code).toBe(0);
    expect(migrate.stdout).toBe(`shop-maria/${myDatabase}.shop_inbox: inbox up to date\n`);
  });
});
