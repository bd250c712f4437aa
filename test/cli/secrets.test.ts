import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';

/** Secrets passed as URL query parameters never reach the terminal either. */
describe('txoutbox CLI and secrets in URL query parameters', () => {
  let cli: CliWorkspace;
  beforeAll(async () => {
    cli = await cliWorkspace();
  });
  afterAll(async () => cli?.cleanup());

  it('redacts ?password= and &sslpassword= of an unreachable database in errors', async () => {
    await cli.writeConfig({
      databases: [
        {
          name: 'ledger',
          dialect: 'postgres',
          url: 'postgres://app@127.0.0.1:1/ledger?password=${LEDGER_PW}&sslpassword=Key-Pa55-9&sslmode=disable',
        },
      ],
      brokers: { mem: { type: 'memory' } },
    });
    for (const command of [['status'], ['relay']]) {
      const result = await cli.run(command, { LEDGER_PW: 'Pa55-in-query-1' });
      expect(result.code, command.join(' ')).toBe(3);
      expect(result.stderr).toContain('Cannot connect to database "ledger" at postgres://app@127.0.0.1:1/ledger?password=***');
      expect(result.stderr + result.stdout).not.toContain('Pa55-in-query-1');
      expect(result.stderr + result.stdout).not.toContain('Key-Pa55-9');
    }
  });
});
