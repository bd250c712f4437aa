import { Kysely, MysqlDialect, sql } from 'kysely';
import mysql from 'mysql2';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { MemoryBroker, type Inbox } from '../../src/index.js';
import type { AdminStore } from '../../src/dialects/admin.js';
import { adminStoreFor } from '../../src/dialects/index.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import { createHarness, type Harness } from '../support/harness.js';
import { setUpInbox } from '../support/inbox-helpers.js';
import { clearTables, drain, testRelay } from '../support/relay-helpers.js';

/**
 * mysql2 interpolates parameters on the client and escapes quotes with a backslash. Under NO_BACKSLASH_ESCAPES a
 * backslash is an ordinary character, so `\'` would end the literal: every value txoutbox sends must be written
 * in a form no SQL mode can misread.
 */
const NASTY = [
  "O'Brien",
  "\\'",
  '\\',
  "it''s",
  '"double" and `back`',
  'é ✓ 𝄞',
  // The crafted header: under NO_BACKSLASH_ESCAPES with backslash escaping it closed the literal and added a row.
  "x\\', 'forged', 0, 'application/json', '{}', 1, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6)), (0x666f72676564, 'payments.refund' -- x",
];

describe('MySQL under NO_BACKSLASH_ESCAPES', () => {
  let h: Harness;
  let strict: Harness;
  let pool: mysql.Pool;
  let admin: AdminStore;
  let inbox: Inbox;
  beforeAll(async () => {
    h = await createHarness('mysql');
    inbox = await setUpInbox(h);
    // The user's own pool, every connection in the mode (as a server configured with it would be).
    pool = mysql.createPool({ uri: inject('mysqlUrl'), connectionLimit: 4, timezone: 'Z' });
    pool.on('connection', (connection) => {
      connection.query("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')");
    });
    const db = new Kysely<any>({ dialect: new MysqlDialect({ pool }) });
    strict = { ...h, db };
    admin = adminStoreFor('mysql', db, tableNames('txoutbox', h.schema));
  });
  afterAll(async () => {
    await strict?.db.destroy();
    await h?.destroy();
  });
  beforeEach(async () => clearTables(h));

  it('the pool really runs in the mode', async () => {
    const { rows } = await sql<{ mode: string }>`SELECT @@SESSION.sql_mode AS mode`.execute(strict.db);
    expect(rows[0]!.mode).toContain('NO_BACKSLASH_ESCAPES');
  });

  it('stores header values, content types and ids with quotes and backslashes exactly, and writes nothing else', async () => {
    const headers = Object.fromEntries(NASTY.map((value, i) => [`h${i}`, value]));
    headers['user-agent'] = NASTY[NASTY.length - 1]!;
    await strict.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: "id-O'Brien\\", topic: 'orders', key: "k'\\", payload: { name: "O'Brien" }, headers },
        { id: 'raw', topic: 'orders', payload: Buffer.from('x'), contentType: 'text/plain; name="O\'B\\"' },
      ]),
    );
    const rows = await h.rows();
    expect(rows.map((row) => row.id)).toEqual(["id-O'Brien\\", 'raw']);
    expect(rows[0]!.headers).toMatchObject(headers);
    expect(rows[0]!.key).toBe("k'\\");
    expect(rows[1]!.contentType).toBe('text/plain; name="O\'B\\"');
  });

  it('enqueues on a raw mysql2 connection in the mode', async () => {
    const connection = await new Promise<mysql.PoolConnection>((resolve, reject) =>
      pool.getConnection((error, conn) => (error ? reject(error) : resolve(conn))),
    );
    try {
      const query = (text: string) =>
        new Promise<void>((resolve, reject) => connection.query(text, (error) => (error ? reject(error) : resolve())));
      await query('BEGIN');
      await h.outbox.enqueue(connection, { id: 'raw-1', topic: 'orders', payload: 'x', headers: { a: "O'Brien\\'" } });
      await query('COMMIT');
    } finally {
      connection.release();
    }
    expect((await h.rows()).map((row) => [row.id, row.headers])).toEqual([['raw-1', { a: "O'Brien\\'" }]]);
  });

  it("keeps a broker's error text with quotes and backslashes as last_error, and finds it with the --error filter", async () => {
    const error = 'HTTP 500: {"detail":"O\'Brien \\\' said no"}';
    await strict.db.transaction().execute((trx) =>
      h.outbox.enqueue(trx, [
        { id: 'p1', topic: 'orders.created', key: 'K', payload: 1 },
        { id: 'p2', topic: 'orders_created', payload: 2 },
      ]),
    );
    const broker = new MemoryBroker().fail({ kind: 'permanent', error }, { times: 1, where: (m) => m.id === 'p1' });
    broker.fail({ kind: 'permanent', error: 'other' }, { times: 1, where: (m) => m.id === 'p2' });
    await drain(testRelay(strict, broker));
    const [row] = await h.rows();
    expect(row).toMatchObject({ id: 'p1', state: 'dead' });
    expect((await h.rows()).map((r) => r.id)).toEqual(['p1', 'p2']);
    expect(row!.lastError).toContain(error);
    // What `txoutbox dead list --error ... --topic ...` asks the admin store.
    expect((await admin.listDead({ error: "o'brien \\' SAID" }, 10)).map((d) => d.id)).toEqual(['p1']);
    expect((await admin.listDead({ error: "\\'x" }, 10)).map((d) => d.id)).toEqual([]);
    expect((await admin.listDead({ topic: 'orders.*' }, 10)).map((d) => d.id)).toEqual(['p1']);
    // `_` is no wildcard in a topic filter, whatever the SQL mode says of LIKE's escape character.
    expect((await admin.listDead({ topic: 'orders_created' }, 10)).map((d) => d.id)).toEqual(['p2']);
    expect((await admin.listDead({ topic: 'orders_*' }, 10)).map((d) => d.id)).toEqual(['p2']);
    expect((await admin.listDead({ key: 'K' }, 10)).map((d) => d.id)).toEqual(['p1']);
  });

  it('records inbox dead letters with quotes and backslashes exactly', async () => {
    const letter = {
      consumer: "billing'\\",
      messageId: "m'\\",
      source: 'rabbitmq',
      destination: "q'\\",
      topic: "t'\\",
      payload: Buffer.from("O'Brien\\'"),
      contentType: "text/plain; x='\\'",
      headers: { a: "O'Brien\\'", b: NASTY[NASTY.length - 1]! },
      error: "boom: O'Brien \\' -- ",
      attempts: 3,
    };
    await inbox.recordDeadLetter(strict.db, letter);
    const [stored] = await inbox.deadLetters(strict.db, { consumer: letter.consumer });
    expect(stored).toMatchObject({ ...letter, payload: letter.payload });
    expect(await inbox.deadLetters(h.db)).toHaveLength(1);
  });
});
