import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MemoryBroker } from '../../src/index.js';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';
import { drain, testRelay } from '../support/relay-helpers.js';

/** Raw control characters a terminal would act on: C0 (but tab and newline), DEL and C1 (0x9b is an 8-bit CSI). */
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;
/** A webhook's response body: sets the window title, clears the screen, and a C1 CSI. */
const HOSTILE = 'HTTP 502: \x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\x9b31m';

describe('txoutbox CLI output never carries raw control characters', () => {
  let h: Harness;
  let cli: CliWorkspace;
  beforeAll(async () => {
    h = await createHarness('postgres');
    await h.db
      .transaction()
      .execute((trx) =>
        h.outbox.enqueue(trx, [
          { id: 'esc-1', topic: 'orders', key: 'k1', payload: Buffer.from(`text \x1b[2J\x9b1m body`), contentType: 'text/plain' },
        ]),
      );
    await drain(testRelay(h, new MemoryBroker().fail({ kind: 'permanent', error: HOSTILE })));
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema: h.schema }],
      brokers: { mem: { type: 'memory' } },
      http: { enabled: false },
    });
  });
  afterAll(async () => {
    await cli?.cleanup();
    await h?.destroy();
  });

  const run = async (args: string[], code = 0) => {
    const result = await cli.run(args);
    expect(result.code, result.stderr).toBe(code);
    const all = result.stdout + result.stderr;
    expect(RAW_CONTROL.exec(all)?.[0], `raw control character in the output of ${args.join(' ')}:\n${all}`).toBeUndefined();
    return result;
  };

  it('dead list and dead show render the last error and a text payload with visible escapes', async () => {
    expect((await run(['dead', 'list'])).stdout).toContain('\\u001b]0;pwned\\u0007\\u001b[2J');
    const shown = await run(['dead', 'show', 'esc-1']);
    expect(shown.stdout).toContain('HTTP 502: \\u001b]0;pwned\\u0007\\u001b[2J\\u001b[31mred\\u000d\\u009b31m');
    expect(shown.stdout).toContain('text \\u001b[2J\\u009b1m body');
  });

  it('the --json forms stay valid JSON that decodes to the stored text', async () => {
    const listed = JSON.parse((await run(['dead', 'list', '--json'])).stdout) as { deadLetters: { lastError: string }[] };
    expect(listed.deadLetters[0]!.lastError).toContain(HOSTILE);
    const shown = JSON.parse((await run(['dead', 'show', 'esc-1', '--json'])).stdout) as { payload: string };
    expect(shown.payload).toBe('text \x1b[2J\x9b1m body');
  });

  it('errors that echo what a person typed show its escapes too', async () => {
    const result = await run(['dead', 'show', 'no-such-\x1b[2J-id'], 5);
    expect(result.stderr).toContain('no-such-\\u001b[2J-id');
  });
});
