import { describe, expect, it } from 'vitest';
import { ConfigError, createOutbox } from '../../src/index.js';
import { planBatch } from '../../src/outbox/batch.js';
import type { ValidMessage } from '../../src/outbox/message.js';
import { relayDefaults, relayOptionsSchema, relayTuningSchema } from '../../src/relay/options.js';
import { companionsOf, createRelayProblems, settingOf, tuningProbes } from '../support/relay-tuning-probes.js';

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

describe('createRelay options', () => {
  it('uses the documented defaults for the tuning options', () => {
    expect(relayDefaults).toEqual({
      batchSize: 100,
      maxBatchBytes: 8 * 1024 * 1024,
      concurrency: 2,
      leaseMs: 30_000,
      publishTimeoutMs: 10_000,
      maxAttempts: 10,
      backoff: { initialMs: 1000, maxMs: 300_000, factor: 2 },
      deadLetterPolicy: 'block-key',
      minPollIntervalMs: 20,
      retainSentMs: 0,
      cleanupIntervalMs: 10_000,
      cleanupBatchSize: 1000,
      asyncCommit: true,
      brokerProbeIntervalMs: 250,
      mode: 'polling',
      partitions: 1,
      standbyRetryMs: 500,
    });
  });

  it('are the tuning options (which the sidecar reads from its config too) and only those a config file cannot hold', () => {
    // A new option lands in relayTuningSchema, or here with a reason: the sidecar sets these itself.
    const tuning = new Set(Object.keys(relayTuningSchema.shape));
    expect(Object.keys(relayOptionsSchema.shape).filter((key) => !tuning.has(key))).toEqual([
      'db', // opened from databases[].url
      'dialect', // databases[].dialect
      'table', // databases[].tables[].table
      'schema', // databases[].tables[].schema or databases[].schema
      'broker', // brokers and routes
      'listen', // databases[].listen: the database's own URL
      'random', // a function
      'store', // tests only
      'replication', // the database's own URL
    ]);
  });

  it.each(tuningProbes().map((probe) => [`${probe.path.join('.')} ${probe.what}`, probe] as const))(
    'checks each tuning option against its bounds: %s',
    (_label, probe) => {
      const problems = createRelayProblems({ ...companionsOf(probe.path), ...settingOf(probe.path, probe.value) });
      if (probe.accepted) expect(problems).toEqual([]);
      else expect(problems).toContainEqual(expect.stringMatching(new RegExp(`^${probe.path.join('\\.')}: `)));
    },
  );
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
