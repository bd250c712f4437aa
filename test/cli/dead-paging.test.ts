import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MemoryBroker, type OutboxMessage } from '../../src/index.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { drain, testRelay } from '../support/relay-helpers.js';

/** More dead letters than one page of the dead-letter commands (500), with seqs of 1 to 4 digits. */
const COUNT = 1200;
const idOf = (i: number) => `dead-${String(i).padStart(4, '0')}`;
const IDS = Array.from({ length: COUNT }, (_, i) => idOf(i + 1));

describe.each(DIALECTS)('txoutbox dead list|retry|discard page through many dead letters on %s', (dialect) => {
  let h: Harness;
  let cli: CliWorkspace;

  /** Enqueues COUNT keyless messages in id order and lets a relay dead-letter every one of them. */
  async function deadLetters() {
    await h.db.transaction().execute(async (trx) => {
      for (let from = 0; from < COUNT; from += 200) {
        const batch: OutboxMessage[] = IDS.slice(from, from + 200).map((id) => ({ id, topic: 'paging', payload: { id } }));
        await h.outbox.enqueue(trx, batch);
      }
    });
    await drain(testRelay(h, new MemoryBroker().fail({ kind: 'permanent', error: 'no route' }), { batchSize: 500 }));
    expect((await h.rows()).filter((row) => row.state === 'dead').length).toBe(COUNT);
  }

  const listed = async () => {
    const result = await cli.run(['dead', 'list', '--json', '--limit', String(COUNT * 2)]);
    expect(result.code, result.stderr).toBe(0);
    return (JSON.parse(result.stdout) as { deadLetters: { id: string }[] }).deadLetters.map((row) => row.id);
  };

  beforeAll(async () => {
    h = await createHarness(dialect);
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [
        { name: 'main', dialect, url: inject(dialect === 'postgres' ? 'pgUrl' : 'mysqlUrl'), schema: h.schema, listen: false },
      ],
      brokers: { mem: { type: 'memory' } },
      http: { enabled: false },
    });
  });
  afterAll(async () => {
    await cli?.cleanup();
    await h?.destroy();
  });

  it('lists a few dead letters oldest first (seq 9 before seq 10) in a fresh table', async () => {
    const ids = Array.from({ length: 12 }, (_, i) => `few-${String(i + 1).padStart(2, '0')}`);
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(
        trx,
        ids.map((id) => ({ id, topic: 'paging', payload: id })),
      ),
    );
    await drain(testRelay(h, new MemoryBroker().fail({ kind: 'permanent', error: 'no route' })));
    expect(await listed()).toEqual(ids);
    expect((await cli.run(['dead', 'discard', '--all', '--yes'])).code).toBe(0);
  });

  it('lists each dead letter exactly once, oldest first, and retry --all / discard --all act on every one', async () => {
    await deadLetters();
    expect(await listed()).toEqual(IDS);

    const retried = await cli.run(['dead', 'retry', '--all', '--yes']);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain(`Retried ${COUNT} dead letter(s)`);
    expect(await listed()).toEqual([]);
    const rows = await h.rows();
    expect(rows.length).toBe(COUNT);
    expect(rows.every((row) => row.state === 'pending')).toBe(true);

    await drain(testRelay(h, new MemoryBroker().fail({ kind: 'permanent', error: 'no route' }), { batchSize: 500 }));
    expect(await listed()).toEqual(IDS);
    const discarded = await cli.run(['dead', 'discard', '--all', '--yes']);
    expect(discarded.code, discarded.stderr).toBe(0);
    expect(discarded.stdout).toContain(`Discarded ${COUNT} dead letter(s)`);
    expect(await h.rows()).toEqual([]);
  });
});
