import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MemoryBroker } from '../../src/index.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { drain, testRelay } from '../support/relay-helpers.js';

/**
 * On a pipe Node writes stdout asynchronously; a CLI that exits as soon as its command returns loses whatever the
 * reader had not taken yet (the kernel's pipe buffer is 64 KiB). Every command must flush before it exits.
 */
describe('txoutbox output through a pipe', () => {
  const COUNT = 1500;
  let h: Harness;
  let cli: CliWorkspace;

  beforeAll(async () => {
    h = await createHarness('postgres');
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema: h.schema, listen: false }],
      brokers: { mem: { type: 'memory' } },
      http: { enabled: false },
    });
    const error = `no route to this destination; ${'the broker said more than fits on one line. '.repeat(4)}`;
    const messages = Array.from({ length: COUNT }, (_, i) => ({
      id: `piped-${String(i).padStart(5, '0')}`,
      topic: 'piped',
      payload: i,
    }));
    await h.db.transaction().execute(async (trx) => {
      for (let from = 0; from < COUNT; from += 500) await h.outbox.enqueue(trx, messages.slice(from, from + 500));
    });
    await drain(testRelay(h, new MemoryBroker().fail({ kind: 'permanent', error }), { batchSize: 500 }));
  });
  afterAll(async () => {
    await cli?.cleanup();
    await h?.destroy();
  });

  it('dead list --json writes all of its output (far more than 64 KiB) before the process exits', async () => {
    const result = await cli.run(['dead', 'list', '--json', '--limit', String(COUNT)]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.length).toBeGreaterThan(4 * 65_536);
    const { deadLetters } = JSON.parse(result.stdout) as { deadLetters: { id: string }[] };
    expect(deadLetters.length).toBe(COUNT);
  });

  it('dead list as a table writes every row before the process exits', async () => {
    const result = await cli.run(['dead', 'list', '--limit', String(COUNT)]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.length).toBeGreaterThan(2 * 65_536);
    const rows = result.stdout.split('\n').filter((line) => line.includes(' piped-'));
    expect(rows.length).toBe(COUNT);
    expect(result.stdout).toContain(`(first ${COUNT}; raise --limit`);
  });
});
