import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createOutbox } from '../../src/index.js';
import { AMQP_URL, consumedQueue, restartRabbitMq, type QueueConsumer } from '../support/brokers/rabbitmq-fixture.js';
import { cliWorkspace, metricValue, type CliWorkspace } from '../support/cli.js';
import { waitFor } from '../support/relay-helpers.js';

const run = promisify(execFile);

/** Stops RabbitMQ (a shared server), so this file runs in the serial project. */
describe('/readyz follows the broker (RabbitMQ stopped and started again)', () => {
  const schema = `cli_ready_${randomBytes(4).toString('hex')}`;
  let db: Kysely<any>;
  let cli: CliWorkspace;
  let queue: { queue: string; consumer: QueueConsumer; close(): Promise<void> };
  const outbox = createOutbox({ dialect: 'postgres', schema });

  beforeAll(async () => {
    db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: inject('pgUrl') }) }) });
    queue = await consumedQueue('txoutbox-cli-ready');
    cli = await cliWorkspace();
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: inject('pgUrl'), schema }],
      brokers: { rabbit: { type: 'rabbitmq', url: AMQP_URL, exchange: '' } },
      routes: { '*': 'rabbit' },
      // The message committed during the outage is retried every 500 ms at most while RabbitMQ is down. With the
      // default budget (10 attempts, about 4 s) it was dead-lettered, and so never published, whenever RabbitMQ took
      // longer than that to start again (a loaded machine): a budget far beyond the test's waits removes the race.
      relay: { pollIntervalMs: 200, backoff: { initialMs: 100, maxMs: 500 }, maxAttempts: 1000 },
      http: { port: 0 },
    });
    expect((await cli.run(['migrate'])).code).toBe(0);
  });
  afterAll(async () => {
    // Whatever happened, leave RabbitMQ running for the files after this one.
    await run('rabbitmqctl', ['start_app']).catch(() => {});
    await cli?.cleanup();
    await queue?.close().catch(() => {});
    await sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`.execute(db);
    await db?.destroy();
  });

  const readiness = async (http: string) => {
    const response = await fetch(`${http}/readyz`);
    return {
      status: response.status,
      body: (await response.json()) as { ready: boolean; checks: { name: string; ok: boolean; error?: string }[] },
    };
  };

  it('turns unready while RabbitMQ is down, ready again when it returns, and what was committed meanwhile is published', async () => {
    const relay = cli.spawn(['relay']);
    const http = await relay.httpUrl();
    expect((await readiness(http)).status).toBe(200);

    await run('rabbitmqctl', ['stop_app']);
    let down: Awaited<ReturnType<typeof readiness>> | undefined;
    await waitFor(async () => (down = await readiness(http)).status === 503, 30_000, '/readyz to report the broker down');
    expect(down!.body.ready).toBe(false);
    expect(down!.body.checks.find((c) => c.name === 'rabbit')).toMatchObject({ ok: false });
    expect(down!.body.checks.find((c) => c.name === 'main')).toEqual({ kind: 'database', name: 'main', ok: true });
    expect(metricValue(await (await fetch(`${http}/metrics`)).text(), 'txoutbox_ready', { kind: 'broker', name: 'rabbit' })).toBe(
      0,
    );
    // /healthz is about the process only.
    expect((await fetch(`${http}/healthz`)).status).toBe(200);

    const [result] = await db
      .transaction()
      .execute((trx) => outbox.enqueue(trx, [{ topic: queue.queue, payload: 'while down' }]));

    await restartRabbitMq();
    await waitFor(async () => (await readiness(http)).status === 200, 30_000, '/readyz to report ready again');
    await waitFor(
      async () => {
        if (queue.consumer.received().some((m) => m.id === result!.id)) return true;
        // Fail at once, saying why, if the outage outlasted the retry budget after all.
        const { rows } = await sql<{ state: string; attempts: number }>`
          SELECT state, attempts FROM ${sql.id(schema, 'txoutbox')} WHERE id = ${result!.id}`.execute(db);
        expect(rows[0]?.state, `the message after ${rows[0]?.attempts} attempts`).not.toBe('dead');
        return false;
      },
      30_000,
      'the message committed while RabbitMQ was down',
    );
    expect(relay.logs().some((l) => l.msg === 'broker rabbit is unreachable')).toBe(true);

    relay.kill('SIGTERM');
    expect((await relay.exited).code).toBe(0);
  });
});
