import { describe, expect, it } from 'vitest';
import { routeTopic, topicMatches } from '../../src/brokers/routing.js';
import { logicalNamesOf, parseConfig, relaySettingsFor, substituteEnv } from '../../src/cli/config.js';
import { CliError } from '../../src/cli/errors.js';
import { Redactor, redactUrl } from '../../src/cli/redact.js';
import { companionsOf, createRelayProblems, settingOf, tuningProbes } from '../support/relay-tuning-probes.js';

describe('CLI configuration', () => {
  it('substitutes ${VAR} and ${VAR:-default} in values only, keeps $${ literal, and names unset variables', () => {
    const missing: string[] = [];
    const out = substituteEnv(
      { url: 'postgres://u:${PW}@h/${DB:-app}', list: ['${A}', 'cost: $${NOT_A_VAR}'], n: 5, nested: { x: '${NOPE}' } },
      { PW: 'p@ss', A: 'a' },
      [],
      missing,
    );
    expect(out).toEqual({ url: 'postgres://u:p@ss@h/app', list: ['a', 'cost: ${NOT_A_VAR}'], n: 5, nested: { x: '' } });
    expect(missing).toEqual(['nested.x: environment variable NOPE is not set (or use ${NOPE:-default})']);
  });

  it('fills defaults: one txoutbox table per database, http on 127.0.0.1, and table relay settings over global ones', () => {
    const { config } = parseConfig(
      {
        databases: [
          { name: 'a', dialect: 'postgres', url: 'postgres://h/db' },
          {
            name: 'b',
            dialect: 'mysql',
            url: 'mysql://h/db',
            tables: [{ table: 'x', relay: { batchSize: 5, backoff: { maxMs: 9 } } }],
          },
        ],
        brokers: { m: { type: 'memory' } },
        relay: { batchSize: 50, concurrency: 3, backoff: { initialMs: 7 } },
      },
      {},
    );
    expect(config.databases[0]!.tables).toEqual([{ table: 'txoutbox' }]);
    expect(config.http).toEqual({ enabled: true, host: '127.0.0.1', port: 9464, dashboard: false });
    expect(relaySettingsFor(config, config.databases[1]!.tables[0]!)).toEqual({
      batchSize: 5,
      concurrency: 3,
      backoff: { initialMs: 7, maxMs: 9 },
    });
  });

  it('redacts URL passwords and secret fields everywhere, including inside other text', () => {
    expect(redactUrl('amqp://guest:guest@127.0.0.1:5672/vhost')).toBe('amqp://guest:***@127.0.0.1:5672/vhost');
    expect(redactUrl('postgres://root@127.0.0.1/test')).toBe('postgres://root@127.0.0.1/test');
    const redactor = Redactor.fromConfig({
      databases: [{ url: 'mysql://app:Sup3r%21@db/x' }],
      brokers: { h: { signingSecret: 'sign-me-please', headers: { authorization: 'Bearer t0ken' } }, m: { password: 'mqtt-pw' } },
    });
    expect(redactor.text('login failed for Sup3r! / Sup3r%21, secret sign-me-please, mqtt-pw')).toBe(
      'login failed for *** / ***, secret ***, ***',
    );
  });

  it('routes a topic by exact name, then the longest matching pattern, then the only broker', () => {
    expect(topicMatches('orders.*', 'orders.created')).toBe(true);
    expect(topicMatches('orders.*', 'ordersXcreated')).toBe(false);
    const routes = { '*': 'default', 'orders.*': 'rabbit', 'orders.created': 'nats', 'orders.eu.*': 'kafka' };
    expect(routeTopic(routes, ['default', 'rabbit', 'nats', 'kafka'], 'orders.created')).toBe('nats');
    expect(routeTopic(routes, ['default', 'rabbit', 'nats', 'kafka'], 'orders.eu.paid')).toBe('kafka');
    expect(routeTopic(routes, ['default', 'rabbit', 'nats', 'kafka'], 'orders.paid')).toBe('rabbit');
    expect(routeTopic(routes, ['default', 'rabbit', 'nats', 'kafka'], 'users')).toBe('default');
    expect(routeTopic({}, ['only'], 'anything')).toBe('only');
    expect(routeTopic({ 'a.*': 'x' }, ['x', 'y'], 'b')).toBeUndefined();
  });
});

describe('CLI configuration from the environment', () => {
  it('reads a value that is one whole ${VAR} as a number or boolean, and an empty schema as unset', () => {
    const { config } = parseConfig(
      {
        databases: [
          {
            name: 'a',
            dialect: 'postgres',
            url: 'postgres://h/db',
            schema: '${SCHEMA:-}',
            tables: [{ table: 't', schema: '${S2:-}' }],
          },
        ],
        brokers: { m: { type: 'memory' } },
        http: { port: '${PORT}', enabled: '${ON}', host: 'h${PORT}' },
      },
      { PORT: '8080', ON: 'false' },
    );
    expect(config.http).toEqual({ port: 8080, enabled: false, host: 'h8080', dashboard: false });
    expect(config.databases[0]!.schema).toBeUndefined();
    expect(config.databases[0]!.tables[0]!.schema).toBeUndefined();
  });

  it('declares an inbox per database: an inbox-only database has no outbox tables and needs no broker', () => {
    const { config } = parseConfig(
      {
        databases: [
          { name: 'shop', dialect: 'postgres', url: 'postgres://h/db', inbox: {} },
          { name: 'both', dialect: 'mysql', url: 'mysql://h/db', tables: [{ table: 'txoutbox' }], inbox: { schema: 'in' } },
        ],
        brokers: { m: { type: 'memory' } },
      },
      {},
    );
    expect(config.databases[0]).toMatchObject({ tables: [], inbox: { table: 'txoutbox_inbox' } });
    expect(config.databases[1]).toMatchObject({
      tables: [{ table: 'txoutbox' }],
      inbox: { table: 'txoutbox_inbox', schema: 'in' },
    });
    const inboxOnly = parseConfig({ databases: [{ name: 'c', dialect: 'postgres', url: 'postgres://h/db', inbox: {} }] }, {});
    expect(inboxOnly.config.brokers).toEqual({});
  });

  it('refuses a database with nothing to do, an inbox named like an outbox table, and outbox tables without a broker', () => {
    const problems = (raw: unknown) => {
      try {
        parseConfig(raw, {}, 'x.yaml');
      } catch (error) {
        return (error as Error).message.split('\n').slice(1);
      }
      throw new Error('the configuration was accepted');
    };
    expect(
      problems({
        databases: [{ name: 'a', dialect: 'postgres', url: 'postgres://h/db', tables: [] }],
        brokers: { m: { type: 'memory' } },
      }),
    ).toEqual([
      '  - databases.0.tables: lists no outbox table and the database declares no inbox: list a table, or add `inbox: {}`',
    ]);
    expect(
      problems({
        databases: [
          {
            name: 'a',
            dialect: 'postgres',
            url: 'postgres://h/db',
            schema: 's',
            inbox: { table: 'txoutbox' },
            tables: [{ table: 'txoutbox' }],
          },
        ],
        brokers: { m: { type: 'memory' } },
      }),
    ).toEqual(['  - databases.0.inbox.table: s.txoutbox is also an outbox table of this database; give the inbox its own name']);
    expect(
      problems({
        databases: [
          { name: 'a', dialect: 'postgres', url: 'postgres://h/db' },
          { name: 'b', dialect: 'postgres', url: 'postgres://h/db', inbox: {} },
        ],
      }),
    ).toEqual([
      '  - brokers: configure at least one broker: the outbox tables of a need one to relay to (a database with only an inbox needs none)',
    ]);
    expect(
      problems({ databases: [{ name: 'a', dialect: 'postgres', url: 'postgres://h/db', inbox: { table: 'bad-name' } }] }),
    ).toEqual(['  - databases.0.inbox.table: must be a plain SQL identifier (a letter or _, then letters, digits or _)']);
  });
});

describe('CLI configuration of tables in mode logical', () => {
  const problems = (raw: unknown) => {
    try {
      parseConfig(raw, {}, 'x.yaml');
    } catch (error) {
      return { code: (error as { exitCode?: number }).exitCode, lines: (error as Error).message.split('\n').slice(1) };
    }
    throw new Error('the configuration was accepted');
  };

  it('accepts mode, slot, publication, partitions, standbyRetryMs and maxRetainedWalBytes, and derives the names', () => {
    const { config } = parseConfig(
      {
        databases: [
          {
            name: 'a',
            dialect: 'postgres',
            url: 'postgres://h/db',
            schema: 'app',
            tables: [
              { table: 'orders', relay: { slot: 'orders_slot', publication: 'orders_pub', partitions: '2' } },
              { table: 'audit' },
            ],
          },
        ],
        brokers: { m: { type: 'memory' } },
        relay: { mode: 'logical', standbyRetryMs: 250, maxRetainedWalBytes: '1048576' },
      },
      {},
    );
    const [orders, audit] = config.databases[0]!.tables;
    expect(relaySettingsFor(config, orders!)).toEqual({
      mode: 'logical',
      slot: 'orders_slot',
      publication: 'orders_pub',
      partitions: 2,
      standbyRetryMs: 250,
      maxRetainedWalBytes: 1_048_576,
    });
    expect(logicalNamesOf(config.databases[0]!, orders!, relaySettingsFor(config, orders!))).toEqual({
      slots: ['orders_slot_0', 'orders_slot_1'],
      publications: ['orders_pub_0', 'orders_pub_1'],
      partitions: 2,
    });
    // The relay's own defaults: `<schema>_<table>_slot`, `<schema>_<table>_publication`.
    expect(logicalNamesOf(config.databases[0]!, audit!, relaySettingsFor(config, audit!))).toEqual({
      slots: ['app_audit_slot'],
      publications: ['app_audit_publication'],
      partitions: 1,
    });
  });

  it('refuses mode logical on MySQL, bad or shared slot names, each with its path (exit 2); kept sent rows are fine', () => {
    const refused = problems({
      databases: [
        { name: 'shop', dialect: 'mysql', url: 'mysql://h/db', tables: [{ table: 't', relay: { mode: 'logical' } }] },
        {
          name: 'orders',
          dialect: 'postgres',
          url: 'postgres://h/db',
          tables: [
            { table: 'a', relay: { mode: 'logical', slot: 'Not-A-Slot' } },
            { table: 'b', relay: { mode: 'logical', slot: 'shared', retainSentMs: 1000 } },
            { table: 'c', relay: { mode: 'logical', slot: 'shared' } },
          ],
        },
      ],
      brokers: { m: { type: 'memory' } },
    });
    expect(refused.code).toBe(2);
    expect(refused.lines).toEqual([
      `  - databases.0.tables.0.relay.mode: mode logical reads PostgreSQL's write-ahead log, but database "shop" is mysql (MySQL/MariaDB tables are relayed by polling: remove mode there)`,
      '  - databases.1.tables.0.relay: slot name "Not-A-Slot" is not valid: use lower-case letters, digits and underscores, at most 63 characters.',
      '  - databases.1.tables.2.relay.slot: slot "shared" is also used by orders/b; give each table its own',
    ]);
    // A global mode reaches every table, a MySQL one too: the path says where it was set.
    expect(
      problems({
        databases: [{ name: 'shop', dialect: 'mysql', url: 'mysql://h/db' }],
        brokers: { m: { type: 'memory' } },
        relay: { mode: 'logical' },
      }).lines,
    ).toEqual([
      `  - relay.mode: mode logical reads PostgreSQL's write-ahead log, but database "shop" is mysql (MySQL/MariaDB tables are relayed by polling: remove mode there)`,
    ]);
  });
});

describe("CLI relay settings are createRelay's tuning options", () => {
  const configWith = (relay: Record<string, unknown> | undefined, tableRelay?: Record<string, unknown>) => ({
    databases: [
      {
        name: 'a',
        dialect: 'postgres',
        url: 'postgres://h/db',
        tables: [{ table: 'txoutbox', ...(tableRelay === undefined ? {} : { relay: tableRelay }) }],
      },
    ],
    brokers: { m: { type: 'memory' } },
    ...(relay === undefined ? {} : { relay }),
  });
  /** The problem lines of the sidecar's config error; none when it accepts the config. */
  const sidecarProblems = (raw: unknown, env: NodeJS.ProcessEnv = {}) => {
    try {
      parseConfig(raw, env, 'x.yaml');
      return [];
    } catch (error) {
      if (!(error instanceof CliError)) throw error;
      return error.message.split('\n').slice(1);
    }
  };

  it.each(tuningProbes().map((probe) => [`${probe.path.join('.')} ${probe.what}`, probe] as const))(
    'accepts what createRelay accepts and refuses the rest with its message, globally, per table and as text: %s',
    (_label, probe) => {
      const settings = { ...companionsOf(probe.path), ...settingOf(probe.path, probe.value) };
      const library = createRelayProblems(settings);
      expect(library.length === 0, library.join('; ')).toBe(probe.accepted);
      const own = library.find((problem) => problem.startsWith(`${probe.path.join('.')}: `));
      expect(sidecarProblems(configWith(settings))).toEqual(probe.accepted ? [] : [`  - relay.${own}`]);
      expect(sidecarProblems(configWith(undefined, settings))).toEqual(
        probe.accepted ? [] : [`  - databases.0.tables.0.relay.${own}`],
      );
      if (probe.textual) {
        // `${VAR}` gives text: a number or boolean written as text is read as one.
        const text = { ...companionsOf(probe.path), ...settingOf(probe.path, '${VALUE}') };
        expect(sidecarProblems(configWith(text), { VALUE: String(probe.value) }).length === 0).toBe(probe.accepted);
      }
    },
  );

  it('takes asyncCommit, maxBatchBytes, instanceId and brokerProbeIntervalMs from text, and a table overrides them', () => {
    const { config } = parseConfig(
      {
        databases: [
          {
            name: 'a',
            dialect: 'postgres',
            url: 'postgres://h/db',
            tables: [{ table: 'fast', relay: { asyncCommit: true, instanceId: 'fast-relay' } }, { table: 'durable' }],
          },
        ],
        brokers: { m: { type: 'memory' } },
        relay: {
          asyncCommit: '${ASYNC_COMMIT}',
          maxBatchBytes: '${MAX_BATCH_BYTES}',
          instanceId: '${HOSTNAME}',
          brokerProbeIntervalMs: '${PROBE_MS}',
        },
      },
      { ASYNC_COMMIT: 'false', MAX_BATCH_BYTES: '1048576', HOSTNAME: 'pod-7', PROBE_MS: '500' },
    );
    const [fast, durable] = config.databases[0]!.tables;
    expect(relaySettingsFor(config, fast!)).toEqual({
      asyncCommit: true,
      maxBatchBytes: 1_048_576,
      instanceId: 'fast-relay',
      brokerProbeIntervalMs: 500,
    });
    expect(relaySettingsFor(config, durable!)).toEqual({
      asyncCommit: false,
      maxBatchBytes: 1_048_576,
      instanceId: 'pod-7',
      brokerProbeIntervalMs: 500,
    });
  });

  it("fills in none of createRelay's defaults, so a table's unset setting falls back to the global one, then to createRelay's", () => {
    const { config } = parseConfig(configWith({ backoff: { factor: 3 } }, { backoff: {} }), {});
    expect(relaySettingsFor(config, config.databases[0]!.tables[0]!)).toEqual({ backoff: { factor: 3 } });
  });
});
