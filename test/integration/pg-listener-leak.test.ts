import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MemoryBroker, type ListenClient } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { testRelay, waitFor } from '../support/relay-helpers.js';

/**
 * The relay's LISTEN connection: when LISTEN fails on a connection that did open (the server refused the
 * statement), that connection must be closed before the next attempt, and stop() closes whatever is open.
 */
describe('the relay LISTEN connection when LISTEN fails after connecting (PostgreSQL)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());

  it('closes each failed connection, and stop() leaves none behind', async () => {
    const applicationName = `txo_listen_${randomBytes(4).toString('hex')}`;
    let attempts = 0;
    // A real connection whose LISTEN the server answers with an error (the query is sent with a syntax error).
    const source = (): ListenClient => {
      const client = new pg.Client({ connectionString: inject('pgUrl'), application_name: applicationName });
      const query = client.query.bind(client) as (text: string) => Promise<unknown>;
      (client as unknown as ListenClient).query = (text: string) => {
        if (text.startsWith('LISTEN')) attempts++;
        return query(text.startsWith('LISTEN') ? `LISTEN ${text.slice('LISTEN'.length)} oops` : text);
      };
      return client as unknown as ListenClient;
    };
    const open = async () => {
      const { rows } = await sql<{ n: string }>`
        SELECT count(*)::text AS n FROM pg_stat_activity WHERE application_name = ${applicationName}`.execute(h.db);
      return Number(rows[0]!.n);
    };
    const relay = testRelay(h, new MemoryBroker(), { listen: source, pollIntervalMs: 60_000 });
    const errors: Error[] = [];
    relay.on('error', (error) => errors.push(error));
    relay.start();
    // Retries come after 100, 500 and 1000 ms: wait for the fourth attempt.
    await waitFor(() => attempts >= 4, 10_000, 'four LISTEN attempts');
    expect(errors.some((error) => /syntax error/.test(error.message))).toBe(true);
    expect(await open()).toBeLessThanOrEqual(1);
    await relay.stop();
    await waitFor(async () => (await open()) === 0, 5000, 'no connection of the listener left after stop()');
  });
});
