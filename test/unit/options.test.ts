import { describe, expect, it } from 'vitest';
import { ConfigError, createOutbox } from '../../src/index.js';
import { planBatch } from '../../src/outbox/batch.js';
import type { ValidMessage } from '../../src/outbox/message.js';

describe('createOutbox options', () => {
  it('uses the documented defaults', () => {
    const outbox = createOutbox({ dialect: 'postgres' });
    expect(outbox.names).toMatchObject({ schema: null, table: 'txoutbox', keyLocks: 'txoutbox_key_locks' });
  });

  it.each([
    ['an unknown dialect', { dialect: 'sqlite' }, /dialect/],
    ['an unknown option', { dialect: 'postgres', tabel: 'x' }, /tabel/],
    ['a zero maxBatch', { dialect: 'postgres', maxBatch: 0 }, /maxBatch/],
    ['a maxBatch over the ceiling', { dialect: 'postgres', maxBatch: 100_000 }, /maxBatch/],
    ['a fractional maxPayloadBytes', { dialect: 'mysql', maxPayloadBytes: 1.5 }, /maxPayloadBytes/],
    ['a table name with SQL in it', { dialect: 'postgres', table: 'x"; DROP TABLE y; --' }, /table/],
    ['a table name that is too long', { dialect: 'postgres', table: 't'.repeat(49) }, /table/],
    ['a dotted schema name', { dialect: 'mysql', schema: 'a.b' }, /schema/],
    ['a generateId that is not a function', { dialect: 'mysql', generateId: 'ulid' }, /generateId/],
  ])('refuses %s with a ConfigError', (_what, options, message) => {
    expect(() => createOutbox(options as never)).toThrow(ConfigError);
    expect(() => createOutbox(options as never)).toThrow(message);
  });

  it('uses an injected id generator', async () => {
    let n = 0;
    const outbox = createOutbox({ dialect: 'postgres', generateId: () => `fixed-${++n}` });
    // No transaction is needed to see the id: validation names it before the transaction is checked.
    await expect(outbox.enqueue(null as never, { topic: 't', payload: 1 })).rejects.toThrow(/open transaction/);
    expect(n).toBe(1);
  });
});

describe('batch planning', () => {
  const message = (id: string, key: string | null): ValidMessage => ({
    id,
    key,
    topic: 't',
    payload: Buffer.from('1'),
    contentType: 'application/json',
    headers: '{}',
    availableAt: null,
    delayMs: 0,
  });

  it('drops repeated ids and keeps the order given', () => {
    const plan = planBatch(
      [message('1', 'b'), message('2', 'a'), message('1', 'b'), message('3', 'b'), message('4', null)],
      false,
    );
    expect(plan.messages.map((m) => [m.id, m.key])).toEqual([
      ['1', 'b'],
      ['2', 'a'],
      ['3', 'b'],
      ['4', null],
    ]);
  });
});
