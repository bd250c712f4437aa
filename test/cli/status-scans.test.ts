import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { cliWorkspace, type CliWorkspace } from '../support/cli.js';
import { createHarness, type Harness } from '../support/harness.js';

/**
 * The sidecar reads the tables' status (backlog gauges) on a timer. A slow read must not pile up: one read at a
 * time, on a small pool of its own, so the relays' pool stays free for claims.
 */
describe('txoutbox relay status scans (PostgreSQL)', () => {
  let h: Harness;
  let cli: CliWorkspace;
  const applicationName = `txo_scans_${randomBytes(4).toString('hex')}`;
  beforeAll(async () => {
    h = await createHarness('postgres');
    cli = await cliWorkspace();
    const url = new URL(inject('pgUrl'));
    url.searchParams.set('application_name', applicationName);
    await cli.writeConfig({
      databases: [{ name: 'main', dialect: 'postgres', url: url.toString(), schema: h.schema, listen: false, poolSize: 10 }],
      brokers: { mem: { type: 'memory' } },
      metrics: { backlogIntervalMs: 100 },
      http: { enabled: false },
    });
  });
  afterAll(async () => {
    await cli?.cleanup();
    await h?.destroy();
  });

  it('run one at a time while a read is stuck, however often the timer fires', async () => {
    const relay = cli.spawn(['relay']);
    await relay.waitForLog((line) => typeof line.msg === 'string' && line.msg.startsWith('relaying'));
    const scans = async () => {
      const { rows } = await sql<{ n: string }>`
        SELECT count(*)::text AS n FROM pg_stat_activity
        WHERE application_name = ${applicationName} AND state = 'active' AND query LIKE '%sent_last_minute%'`.execute(h.db);
      return Number(rows[0]!.n);
    };
    let most = 0;
    // An exclusive lock stalls every status read for 2 s: 20 timer ticks.
    await h.db.transaction().execute(async (trx) => {
      await sql`LOCK TABLE ${sql.id(h.schema, 'txoutbox')} IN ACCESS EXCLUSIVE MODE`.execute(trx);
      const until = Date.now() + 2000;
      while (Date.now() < until) {
        most = Math.max(most, await scans());
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    });
    relay.kill('SIGTERM');
    expect((await relay.exited).code).toBe(0);
    expect(most).toBe(1);
  });
});
