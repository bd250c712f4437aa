import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';

/** What a person sees when the configuration or the environment is wrong: a clear message, never a password. */
describe('txoutbox CLI errors', () => {
  let cli: CliWorkspace;
  beforeAll(async () => {
    cli = await cliWorkspace();
  });
  afterAll(async () => cli?.cleanup());

  it('lists every problem of an invalid config with its path, exits 2, and prints no secret', async () => {
    await cli.writeConfig(`
databases:
  - name: main
    dialect: postgress
    url: postgres://app:Pa55-word-1@127.0.0.1:5432/test
    tables: [{ table: "orders-outbox" }]
brokers:
  rabbit: { type: rabbitmq, url: "amqp://guest:\${TEST_SECRET}@127.0.0.1:5672" }
  other: { type: carrier-pigeon, password: hunter2-secret }
routes: { "orders.*": nowhere }
relay: { batchSize: 0, leaseMs: "soon" }
http: { port: 99999 }
unknownSection: true
`);
    const result = await cli.run(['relay'], { TEST_SECRET: 'S3cr3t-from-env' });
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    const lines = result.stderr.split('\n');
    expect(lines[0]).toMatch(/^txoutbox: Invalid configuration in .*\.yaml:$/);
    for (const path of [
      'databases.0.dialect: must be one of postgres, mysql',
      'databases.0.tables.0.table: must be a plain SQL identifier',
      'brokers.other.type: must be one of rabbitmq, nats, kafka, redis, mqtt, http, sqs, sns, memory',
      'routes.orders.*: names broker "nowhere", which is not configured',
      'routes: with several brokers, add a default route "*"',
      'relay.batchSize:',
      'relay.leaseMs:',
      'http.port:',
      '(root): Unrecognized key: "unknownSection"',
    ]) {
      expect(
        lines.some((line) => line.startsWith(`  - ${path}`)),
        path,
      ).toBe(true);
    }
    expect(result.stderr).not.toContain('Pa55-word-1');
    expect(result.stderr).not.toContain('S3cr3t-from-env');
    expect(result.stderr).not.toContain('hunter2-secret');
  });

  it('names an unset environment variable', async () => {
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: '${TXOUTBOX_TEST_UNSET_URL}' }],
      brokers: { mem: { type: 'memory' } },
    });
    const result = await cli.run(['status'], {});
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('databases.0.url: environment variable TXOUTBOX_TEST_UNSET_URL is not set');
  });

  it('says which database URL cannot be reached, with its password redacted, and exits 3', async () => {
    // A port on loopback where nothing listens.
    await cli.writeConfig({
      databases: [
        { name: 'ledger', dialect: 'postgres', url: 'postgres://app:Pa55-word-2@127.0.0.1:1/ledger' },
        { name: 'shop', dialect: 'mysql', url: inject('mysqlUrl') },
      ],
      brokers: { mem: { type: 'memory' } },
    });
    for (const command of [['relay'], ['status'], ['migrate'], ['dead', 'list']]) {
      const result = await cli.run(command);
      expect(result.code, command.join(' ')).toBe(3);
      expect(result.stderr).toContain('Cannot connect to database "ledger" at postgres://app:***@127.0.0.1:1/ledger');
      expect(result.stderr).toContain('ECONNREFUSED');
      expect(result.stderr).not.toContain('Pa55-word-2');
    }
    await cli.writeConfig({
      databases: [{ name: 'shop', dialect: 'mysql', url: 'mysql://root:Pa55-word-3@127.0.0.1:1/shop' }],
      brokers: { mem: { type: 'memory' } },
    });
    const mysqlResult = await cli.run(['status']);
    expect(mysqlResult.code).toBe(3);
    expect(mysqlResult.stderr).toContain('Cannot connect to database "shop" at mysql://root:***@127.0.0.1:1/shop');
    expect(mysqlResult.stderr).not.toContain('Pa55-word-3');
  });

  it('tells a person to run `txoutbox migrate` when the outbox table is missing, and exits 4', async () => {
    const schema = `cli_missing_${randomBytes(4).toString('hex')}`;
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema }],
      brokers: { mem: { type: 'memory' } },
    });
    for (const command of [['relay'], ['status'], ['dead', 'list']]) {
      const result = await cli.run(command);
      expect(result.code, command.join(' ')).toBe(4);
      expect(result.stderr).toContain(
        `The outbox table main/${schema}.txoutbox does not exist. Run \`txoutbox migrate --config <file>\` first.`,
      );
    }
  });

  it('refuses a missing config file, an unknown command and invalid broker options with exit 2', async () => {
    const missing = await cli.run(['status', '--config', '/nonexistent/txoutbox.yaml']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('Configuration file /nonexistent/txoutbox.yaml not found');
    const unknown = await cli.run(['relax']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'relax'");
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl') }],
      brokers: { rabbit: { type: 'rabbitmq', url: 'http://user:Pa55-word-4@example.invalid' } },
    });
    const broker = await cli.run(['relay']);
    expect(broker.code).toBe(2);
    expect(broker.stderr).toContain('brokers.rabbit:');
    expect(broker.stderr).toContain('url must be an amqp:// or amqps:// URL');
    expect(broker.stderr).not.toContain('Pa55-word-4');
  });

  it('refuses mode logical on a MySQL database before connecting, naming the path, with exit 2', async () => {
    await cli.writeConfig({
      databases: [{ name: 'shop', dialect: 'mysql', url: inject('mysqlUrl'), tables: [{ table: 'txoutbox', relay: { mode: 'logical' } }] }],
      brokers: { mem: { type: 'memory' } },
    });
    for (const command of [['relay'], ['migrate'], ['slot', 'status']]) {
      const result = await cli.run(command);
      expect(result.code, command.join(' ')).toBe(2);
      expect(result.stderr).toContain(
        `databases.0.tables.0.relay.mode: mode logical reads PostgreSQL's write-ahead log, but database "shop" is mysql`,
      );
    }
  });
});
