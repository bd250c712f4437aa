import { sql } from 'kysely';
import { createRelay, type Broker, type Relay, type RelayOptions } from '../../src/index.js';
import { dialectFor } from '../../src/dialects/index.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import type { RelayStore } from '../../src/dialects/dialect.js';
import type { Harness } from './harness.js';

/** Relay settings that keep tests quick: short backoff, short leases, no jitter. */
export function testRelay(h: Harness, broker: Broker, options: Partial<RelayOptions<unknown>> = {}): Relay {
  return createRelay({
    db: h.db,
    dialect: h.dialect,
    schema: h.schema,
    broker,
    leaseMs: 5_000,
    publishTimeoutMs: 2_000,
    backoff: { initialMs: 1, maxMs: 5, factor: 2 },
    random: () => 1,
    ...options,
  });
}

/** Runs the relay until a cycle claims nothing; returns how many cycles claimed something. */
export async function drain(relay: Relay, maxCycles = 10_000): Promise<number> {
  for (let cycles = 0; cycles < maxCycles; cycles++) {
    const { claimed } = await relay.runOnce();
    if (claimed === 0) return cycles;
  }
  throw new Error(`the relay still claimed work after ${maxCycles} cycles`);
}

/** Like drain, but waits out backoff delays until nothing pending is left to become due. */
export async function settle(h: Harness, relays: Relay[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const relay of relays) await drain(relay);
    const { rows } = await sql<{ n: number | string }>`
      SELECT count(*) AS n FROM ${sql.id(h.schema, 'txoutbox')} WHERE state = 'pending' AND (ready IS NULL OR ready = ${h.dialect === 'postgres' ? sql`true` : sql`1`})`.execute(
      h.db,
    );
    if (Number(rows[0]!.n) === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('messages were still pending and ready (or unsequenced) when settle() timed out');
}

/** The relay store on a harness's tables, to act out what a crashed relay leaves behind. */
export function storeFor(h: Harness): RelayStore {
  return dialectFor(h.dialect).relayStore(h.db, tableNames('txoutbox', h.schema));
}

export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export async function clearTables(h: Harness): Promise<void> {
  for (const table of ['txoutbox', 'orders']) await sql`DELETE FROM ${sql.id(h.schema, table)}`.execute(h.db);
}
