import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';

/** A lease shorter than the publish deadline could be taken over mid-publish: a config error (exit 2), named by path. */
describe('txoutbox config: relay.leaseMs must be longer than relay.publishTimeoutMs', () => {
  let cli: CliWorkspace;
  beforeAll(async () => {
    cli = await cliWorkspace();
  });
  afterAll(async () => cli?.cleanup());

  const configWith = (relay: Record<string, unknown>, tableRelay?: Record<string, unknown>) => ({
    databases: [
      {
        name: 'main',
        dialect: 'postgres',
        url: inject('pgUrl'),
        tables: [{ table: 'txoutbox', ...(tableRelay === undefined ? {} : { relay: tableRelay }) }],
      },
    ],
    brokers: { mem: { type: 'memory' } },
    relay,
    http: { enabled: false },
  });

  it.each([
    ['both set globally', configWith({ leaseMs: 1000, publishTimeoutMs: 5000 }), 'relay.leaseMs'],
    ['a publish deadline over the default lease (30 s)', configWith({ publishTimeoutMs: 40_000 }), 'relay.leaseMs'],
    ['equal values', configWith({ leaseMs: 5000, publishTimeoutMs: 5000 }), 'relay.leaseMs'],
    [
      "a table's own lease under the global publish deadline",
      configWith({ publishTimeoutMs: 5000 }, { leaseMs: 1000 }),
      'databases.0.tables.0.relay.leaseMs',
    ],
  ])('%s: exits 2 naming the field, before connecting to anything', async (_what, config, field) => {
    await cli.writeConfig(config);
    for (const command of [['relay'], ['status']]) {
      const result = await cli.run(command);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toMatch(/^txoutbox: Invalid configuration in /);
      expect(result.stderr).toContain(`  - ${field}: `);
      expect(result.stderr).toContain('publishTimeoutMs');
    }
  });
});
