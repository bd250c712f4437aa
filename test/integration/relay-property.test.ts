import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryBroker, type DeadLetterPolicy, type Relay } from '../../src/index.js';
import { createHarness, DIALECTS, type Harness } from '../support/harness.js';
import { clearTables, drain, storeFor, testRelay } from '../support/relay-helpers.js';

/** What the broker will do with every publish of a message. */
type Fate = 'ok' | 'fail-twice' | 'fail-forever' | 'permanent';
const KEYS = ['a', 'b', 'c', null] as const;
const MAX_ATTEMPTS = 3;
const LEASE_MS = 250;

type Command =
  | { kind: 'enqueue'; commit: boolean; messages: { key: (typeof KEYS)[number]; fate: Fate }[] }
  | { kind: 'relay'; which: 0 | 1 }
  /** A relay claims a batch and dies: its rows are only freed by the lease running out. */
  | { kind: 'crash'; limit: number };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('enqueue' as const),
      commit: fc.boolean(),
      messages: fc.array(
        fc.record({
          key: fc.constantFrom(...KEYS),
          fate: fc.constantFrom<Fate>('ok', 'ok', 'ok', 'fail-twice', 'fail-forever', 'permanent'),
        }),
        { minLength: 1, maxLength: 5 },
      ),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('relay' as const), which: fc.constantFrom<0 | 1>(0, 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crash' as const), limit: fc.integer({ min: 1, max: 4 }) }) },
);

describe.each(DIALECTS)('relay properties on %s', (dialect) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(dialect);
  });
  afterAll(async () => h?.destroy());

  it('loses nothing committed, publishes nothing rolled back, keeps per-key order, and dead-letters exactly the exhausted', async () => {
    let runId = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(commandArb, { minLength: 5, maxLength: 25 }),
        fc.constantFrom<DeadLetterPolicy>('block-key', 'skip'),
        async (commands, policy) => {
          await clearTables(h);
          runId++;
          const fates = new Map<string, Fate>();
          const failures = new Map<string, number>();
          const broker = new MemoryBroker()
            .fail({ kind: 'permanent', error: 'injected permanent' }, { where: (m) => fates.get(m.id) === 'permanent' })
            .fail({ kind: 'retryable', error: 'injected forever' }, { where: (m) => fates.get(m.id) === 'fail-forever' })
            .fail(
              { kind: 'retryable', error: 'injected twice' },
              {
                where: (m) => {
                  if (fates.get(m.id) !== 'fail-twice') return false;
                  const count = (failures.get(m.id) ?? 0) + 1;
                  failures.set(m.id, count);
                  return count <= 2;
                },
              },
            );
          const options = {
            maxAttempts: MAX_ATTEMPTS,
            leaseMs: LEASE_MS,
            publishTimeoutMs: 100,
            deadLetterPolicy: policy,
            batchSize: 3,
          };
          const relays: Relay[] = [
            testRelay(h, broker, { ...options, instanceId: 'r0' }),
            testRelay(h, broker, { ...options, instanceId: 'r1' }),
          ];
          const store = storeFor(h);
          const committed: { id: string; key: string | null }[] = [];
          const rolledBack = new Set<string>();
          let next = 0;

          for (const command of commands) {
            if (command.kind === 'enqueue') {
              const messages = command.messages.map((m) => ({
                id: `r${runId}-m${next++}`,
                topic: 't',
                key: m.key,
                payload: next,
                fate: m.fate,
              }));
              for (const m of messages) fates.set(m.id, m.fate);
              await h.db
                .transaction()
                .execute(async (trx) => {
                  await h.outbox.enqueue(
                    trx,
                    messages.map(({ fate: _fate, ...message }) => message),
                  );
                  if (!command.commit) throw new Error('roll back');
                })
                .then(
                  () => committed.push(...messages.map(({ id, key }) => ({ id, key }))),
                  () => messages.forEach((m) => rolledBack.add(m.id)),
                );
            } else if (command.kind === 'relay') {
              await relays[command.which]!.runOnce();
            } else {
              await store.claim({ count: command.limit, bytes: 1e9 }, `crashed-${next++}`, LEASE_MS);
            }
          }

          // Settle: run both relays until nothing is due or leased any more (crashed leases run out meanwhile).
          const deadline = Date.now() + 15_000;
          for (;;) {
            for (const relay of relays) await drain(relay);
            const rows = await h.rows();
            const waiting = rows.filter((r) => r.state === 'pending' && r.ready !== false);
            if (waiting.length === 0) break;
            if (Date.now() > deadline) throw new Error(`still waiting: ${JSON.stringify(waiting.map((r) => r.id))}`);
            await new Promise((resolve) => setTimeout(resolve, 25));
          }

          const rows = await h.rows();
          const byId = new Map(rows.map((r) => [r.id, r]));
          const accepted = broker.received().map((m) => m.id);
          const acceptedSet = new Set(accepted);

          // Nothing rolled back ever reached the broker, not even as an attempt.
          for (const id of rolledBack) expect(acceptedSet.has(id), `rolled back ${id} was published`).toBe(false);
          expect(rows.every((r) => !rolledBack.has(r.id))).toBe(true);

          for (const { id, key } of committed) {
            const row = byId.get(id);
            const fate = fates.get(id)!;
            if (acceptedSet.has(id)) {
              // Published: the row is gone, and only fates that can succeed get here.
              expect(row, `published ${id} still has a row`).toBeUndefined();
              expect(['ok', 'fail-twice']).toContain(fate);
              continue;
            }
            // Not published: it is dead, or (block-key) waiting behind its key's dead head. Nothing else.
            expect(row, `committed ${id} (${fate}) vanished without being published`).toBeDefined();
            if (row!.state === 'dead') {
              // Claimed more than MAX_ATTEMPTS times (crashed claims count: the relay died mid-publish, for all it
              // knows): dead without another try, whatever the broker would have said.
              if (row!.lastError?.includes('lost its lease')) expect(row!.attempts).toBeGreaterThanOrEqual(MAX_ATTEMPTS);
              else if (fate === 'permanent') expect(row!.lastError).toContain('injected permanent');
              else {
                expect(['fail-forever', 'fail-twice']).toContain(fate);
                expect(row!.attempts).toBeGreaterThanOrEqual(MAX_ATTEMPTS);
                expect(row!.lastError).toMatch(/gave up after \d+ attempts/);
              }
            } else {
              expect(policy).toBe('block-key');
              expect(row!.state).toBe('pending');
              expect(row!.ready).toBe(false);
              const head = rows.find((r) => r.key === key && r.ready);
              expect(head?.state, `${id} waits behind something that is not a dead head`).toBe('dead');
              expect(head!.seq < row!.seq).toBe(true);
            }
          }

          // Per key: first publishes follow enqueue order; under block-key nothing after a dead message went out.
          for (const key of KEYS.filter((k) => k !== null)) {
            const order = committed.filter((m) => m.key === key).map((m) => m.id);
            const firstSeen = [...new Set(accepted.filter((id) => order.includes(id)))];
            expect(firstSeen).toEqual(order.filter((id) => firstSeen.includes(id)));
            if (policy === 'block-key') {
              const firstDead = order.findIndex((id) => byId.get(id)?.state === 'dead');
              if (firstDead >= 0) expect(order.slice(firstDead).some((id) => acceptedSet.has(id))).toBe(false);
            }
            // The key has one head while anything of it is unsent (a dead one under block-key), and never two.
            const heads = (await h.heads()).get(key) ?? 0;
            expect(heads).toBeLessThanOrEqual(1);
            if (rows.some((r) => r.key === key && r.state === 'pending')) expect(heads).toBe(1);
          }
        },
      ),
      { numRuns: 12 },
    );
  });
});
