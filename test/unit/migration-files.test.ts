import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { migrationFiles, renderStatements } from '../../src/dialects/migrator.js';

describe('shipped migration files', () => {
  it('rename the default names to the configured table, qualified with the schema', async () => {
    const [file] = await migrationFiles({ dialect: 'postgres', component: 'outbox' });
    const statements = renderStatements(await readFile(file!, 'utf8'), {
      dialect: 'postgres',
      component: 'outbox',
      table: 'orders_outbox',
      schema: 'shop',
    });
    expect(statements[0]).toMatch(/^CREATE TABLE IF NOT EXISTS "shop"\."orders_outbox" \(/);
    expect(statements.join('\n')).toContain('CREATE INDEX IF NOT EXISTS orders_outbox_claim_idx ON "shop"."orders_outbox"');
    expect(statements.join('\n')).toContain('CREATE TABLE IF NOT EXISTS "shop"."orders_outbox_keys"');
    expect(statements.join('\n')).not.toMatch(/txoutbox/);
    expect(statements.join('\n')).not.toContain('--');
  });

  it('leave names alone when the table keeps its default and no schema is given', async () => {
    const [file] = await migrationFiles({ dialect: 'mysql', component: 'outbox' });
    const statements = renderStatements(await readFile(file!, 'utf8'), {
      dialect: 'mysql',
      component: 'outbox',
      table: 'txoutbox',
      schema: null,
    });
    expect(statements.map((s) => s.split('\n')[0])).toEqual([
      'CREATE TABLE IF NOT EXISTS `txoutbox` (',
      'CREATE TABLE IF NOT EXISTS `txoutbox_keys` (',
      'CREATE TABLE IF NOT EXISTS `txoutbox_key_locks` (',
      'INSERT IGNORE INTO `txoutbox_key_locks` (stripe)',
    ]);
  });

  it("qualify what the upgrade to relay-side sequencing drops, so it drops the configured table's objects", async () => {
    const [, file] = await migrationFiles({ dialect: 'postgres', component: 'outbox' });
    const statements = renderStatements(await readFile(file!, 'utf8'), {
      dialect: 'postgres',
      component: 'outbox',
      table: 'orders_outbox',
      schema: 'shop',
    });
    expect(statements).toContain('DROP INDEX IF EXISTS "shop"."orders_outbox_key_idx"');
    expect(statements).toContain('DROP TABLE IF EXISTS "shop"."orders_outbox_keys"');
    expect(statements.join('\n')).not.toMatch(/txoutbox/);
  });

  it('are numbered and ordered the same way for both dialects', async () => {
    for (const component of ['outbox', 'inbox'] as const) {
      const names = async (dialect: 'postgres' | 'mysql') =>
        (await migrationFiles({ dialect, component })).map((url) => url.pathname.split('/').pop());
      expect(await names('postgres')).toEqual(await names('mysql'));
    }
  });

  it('rename the inbox files from their own default name, txoutbox_inbox', async () => {
    const [file] = await migrationFiles({ dialect: 'postgres', component: 'inbox' });
    const statements = renderStatements(await readFile(file!, 'utf8'), {
      dialect: 'postgres',
      component: 'inbox',
      table: 'billing_inbox',
      schema: 'shop',
    });
    expect(statements.map((s) => s.split('\n')[0])).toEqual([
      'CREATE TABLE IF NOT EXISTS "shop"."billing_inbox" (',
      'CREATE INDEX IF NOT EXISTS billing_inbox_processed_idx ON "shop"."billing_inbox" (processed_at)',
      'CREATE TABLE IF NOT EXISTS "shop"."billing_inbox_dead" (',
      'CREATE UNIQUE INDEX IF NOT EXISTS billing_inbox_dead_message_idx ON "shop"."billing_inbox_dead" (consumer, message_id)',
    ]);
    expect(statements.join('\n')).toContain('CONSTRAINT billing_inbox_pkey PRIMARY KEY (consumer, message_id)');
    expect(statements.join('\n')).not.toMatch(/txoutbox/);
  });
});
