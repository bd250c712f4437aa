import { sql } from 'kysely';
import { fork } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createRelay, migrate, MemoryBroker, slotStatus, type LogicalRelay, type OutboxMessage } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { SlotStream } from '../../src/relay/logical/slot-stream.js';

/** The relay in mode 'logical': committed rows streamed from a replication slot (PostgreSQL, wal_level = logical). */
describe('the logical relay on postgres', () => {
  let h: Harness;
  let relays: LogicalRelay[] = [];
  let slot: string;
  let publication: string;
  let round = 0;

  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => {
    // Publications outlive the schema's tables: drop this file's.
    const { rows } = await sql<{ pubname: string }>`SELECT pubname FROM pg_publication WHERE pubname LIKE ${`${h.schema}%`}`.execute(h.db);
    for (const { pubname } of rows) await sql`DROP PUBLICATION ${sql.id(pubname)}`.execute(h.db);
    await h?.destroy();
  });
  afterEach(async () => {
    await Promise.all(relays.map((relay) => relay.stop({ drainMs: 1000 })));
    relays = [];
    // A slot left behind would keep WAL on this server for ever. A stopped relay's server process may take a moment
    // to let go of it.
    await until(async () => {
      const { rows } = await sql`SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE ${`${slot}%`} AND active`.execute(h.db);
      return rows.length === 0;
    }, 'the slots to be released');
    await sql`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE ${`${slot}%`}`.execute(h.db);
    await sql`DELETE FROM ${sql.id(h.schema, 'txoutbox')}`.execute(h.db);
  });

  /** A fresh slot and publication per test, so tests do not see each other's stream. */
  async function setUp(partitions = 1) {
    round++;
    slot = `${h.schema}_s${round}`;
    publication = `${h.schema}_p${round}`;
    await migrate(h.db, { dialect: 'postgres', schema: h.schema, publication, partitions });
  }

  function relay(broker: MemoryBroker, options: Partial<Parameters<typeof createRelay>[0]> = {}): LogicalRelay {
    const created = createRelay({
      ...options,
      db: h.db,
      dialect: 'postgres',
      schema: h.schema,
      broker,
      mode: 'logical',
      slot,
      publication,
      backoff: { initialMs: 10, maxMs: 50 },
    });
    relays.push(created);
    return created;
  }

  const outbox = () => h.createOutbox({ mode: 'logical' });
  const commit = (messages: OutboxMessage[]) => h.db.transaction().execute((trx) => outbox().enqueue(trx, messages));
  const ids = (broker: MemoryBroker) => broker.received().map((m) => m.id);

  async function until(check: () => boolean | Promise<boolean>, what: string, ms = 15_000) {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  const pendingRows = async () =>
    Number((await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.id(h.schema, 'txoutbox')} WHERE state = 'pending'`.execute(h.db)).rows[0]!.n);

  it('publishes what commits, in commit order per key, never what rolls back, and deletes rows once acknowledged', async () => {
    await setUp();
    const broker = new MemoryBroker();
    await relay(broker).start();
    await commit([1, 2, 3].map((n) => ({ id: `a${n}`, topic: 'orders', key: 'A', payload: n })));
    await h.db
      .transaction()
      .execute(async (trx) => {
        await outbox().enqueue(trx, { id: 'rolled-back', topic: 'orders', key: 'A', payload: 0 });
        throw new Error('roll back');
      })
      .catch(() => undefined);
    await commit([{ id: 'b1', topic: 'orders', key: 'B', payload: 1 }, { id: 'a4', topic: 'orders', key: 'A', payload: 4 }]);
    await commit([{ id: 'keyless', topic: 'audit', payload: {} }]);
    await until(() => new Set(ids(broker)).size === 6, 'six messages');
    // One relay, no crash: each exactly once (the rows committed while it read the table are not sent twice).
    expect(ids(broker)).toHaveLength(6);
    expect(ids(broker).filter((id) => id.startsWith('a'))).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(ids(broker)).not.toContain('rolled-back');
    await until(async () => (await pendingRows()) === 0, 'the rows to be deleted');
    // The slot is confirmed past them: nothing is left for the next start.
    await until(async () => ((await slotStatus(h.db, slot)).lagBytes ?? 1) < 100_000, 'the slot to be confirmed');
  });

  it('publishes rows committed before its slot existed (backfill), before what the stream brings', async () => {
    await setUp();
    await commit([1, 2].map((n) => ({ id: `early${n}`, topic: 'orders', key: 'K', payload: n })));
    const broker = new MemoryBroker();
    await relay(broker).start();
    await commit([{ id: 'late', topic: 'orders', key: 'K', payload: 3 }]);
    await until(() => broker.received().length >= 3, 'three messages');
    expect(ids(broker)).toEqual(['early1', 'early2', 'late']);
  });

  it('loses nothing across a restart: a new relay publishes whatever the stopped one had not confirmed', async () => {
    await setUp();
    const first = new MemoryBroker();
    await relay(first).start();
    const messages = Array.from({ length: 500 }, (_, n) => ({ id: `m${n}`, topic: 'orders', key: `k${n % 20}`, payload: n }));
    for (let n = 0; n < 500; n += 50) await commit(messages.slice(n, n + 50));
    await until(() => first.received().length > 0, 'a first publish');
    await relays[0]!.stop({ drainMs: 0 });
    const second = new MemoryBroker();
    await relay(second).start();
    await until(async () => (await pendingRows()) === 0, 'every row to be sent');
    const all = new Set([...ids(first), ...ids(second)]);
    expect(all.size).toBe(500);
    // Per key, the second relay's messages continue in order.
    for (let key = 0; key < 20; key++) {
      const mine = second.received().filter((m) => m.key === `k${key}`).map((m) => Number(m.id.slice(1)));
      expect(mine).toEqual([...mine].sort((a, b) => a - b));
    }
  });

  // After a clean stop nothing is counted and nothing sent goes again: see logical-takeover.test.ts.
  it('after a stop mid-publish the next relay counts the attempt of what was in flight before it sends it, and sends nothing already sent', async () => {
    await setUp();
    const attemptsOf = async (id: string) =>
      (await sql<{ attempts: number }>`SELECT attempts FROM ${sql.id(h.schema, 'txoutbox')} WHERE id = ${id}`.execute(h.db)).rows[0]?.attempts;
    const cleanStop = async () =>
      (await sql<{ clean_stop: boolean }>`SELECT clean_stop FROM ${sql.id(h.schema, 'txoutbox_slots')} WHERE slot = ${slot}`.execute(h.db))
        .rows[0]?.clean_stop;
    /** The ids a broker was asked to publish, hung ones included. */
    const asked = (broker: MemoryBroker) => {
      const seen: string[] = [];
      const publish = broker.publish.bind(broker);
      broker.publish = (messages, context) => {
        seen.push(...messages.map((m) => m.id));
        return publish(messages, context);
      };
      return seen;
    };
    // x's publish hangs: its transaction stays unconfirmed, so the slot streams it again to the next relay.
    const first = new MemoryBroker().fail({ kind: 'hang' }, { where: (m) => m.id === 'x' });
    await relay(first, { publishTimeoutMs: 60_000, leaseMs: 120_000 }).start();
    await commit([
      { id: 'a1', topic: 'orders', key: 'A', payload: 1 },
      { id: 'b1', topic: 'orders', key: 'B', payload: 1 },
    ]);
    await until(async () => ids(first).length === 2 && (await pendingRows()) === 0, 'a1 and b1 to be sent and marked');
    await commit([{ id: 'x', topic: 'orders', key: 'X', payload: 1 }]);
    await until(() => first.attempts === 3, 'the first relay to publish x');
    await relays[0]!.stop({ drainMs: 0 });
    expect(await cleanStop()).toBe(false);

    // Not clean: the next relay counts x's attempt before it sends x; a1 and b1 (marked) are not asked for again.
    const second = new MemoryBroker().fail({ kind: 'hang' }, { times: 1, where: (m) => m.id === 'x' });
    const secondAsked = asked(second);
    await relay(second).start();
    await until(() => secondAsked.includes('x'), 'the second relay to publish x');
    expect(await attemptsOf('x')).toBe(1);
    second.releaseHung();
    await until(async () => (await pendingRows()) === 0, 'x to be marked');
    expect(secondAsked).toEqual(['x']);
  });

  it('dead-letters a poison message without holding the slot back; its key waits, other keys flow', async () => {
    await setUp();
    const broker = new MemoryBroker().fail({ kind: 'permanent', error: 'poison pill' }, { times: 1, where: (m) => m.id === 'p1' });
    await relay(broker).start();
    await commit([
      { id: 'p1', topic: 'orders', key: 'P', payload: 1 },
      { id: 'p2', topic: 'orders', key: 'P', payload: 2 },
      { id: 'q1', topic: 'orders', key: 'Q', payload: 1 },
    ]);
    await commit([{ id: 'q2', topic: 'orders', key: 'Q', payload: 2 }]);
    await until(() => ids(broker).includes('q2'), 'the other key');
    await until(async () => (await pendingRows()) === 0, 'nothing pending');
    const { rows } = await sql<{ id: string; state: string; last_error: string }>`
      SELECT id, state, last_error FROM ${sql.id(h.schema, 'txoutbox')} ORDER BY seq`.execute(h.db);
    expect(rows).toEqual([
      { id: 'p1', state: 'dead', last_error: expect.stringContaining('poison pill') },
      { id: 'p2', state: 'dead', last_error: expect.stringContaining('waiting behind dead message p1') },
    ]);
    expect(ids(broker)).not.toContain('p2');
    await until(async () => ((await slotStatus(h.db, slot)).lagBytes ?? 1) < 100_000, 'the slot to be confirmed');
  });

  it('a standby takes over the slot when the active relay goes, within 5 s', async () => {
    await setUp();
    const a = new MemoryBroker();
    const b = new MemoryBroker();
    const active = relay(a);
    await active.start();
    await until(() => active.status().partitions[0]!.owned, 'the first relay to hold the slot');
    const standby = relay(b);
    await standby.start();
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(standby.status().partitions[0]!.owned).toBe(false);
    await commit([{ id: 'x1', topic: 'orders', key: 'X', payload: 1 }]);
    await until(() => ids(a).includes('x1'), 'the active relay to publish');
    await active.stop({ drainMs: 0 });
    const gone = Date.now();
    await commit([{ id: 'x2', topic: 'orders', key: 'X', payload: 2 }]);
    await until(() => ids(b).includes('x2'), 'the standby to publish', 5000);
    expect(Date.now() - gone).toBeLessThan(5000);
  });

  it('with partitions, each slot streams its share of the keys, and together they send everything in order per key', async () => {
    await setUp(2);
    const broker = new MemoryBroker();
    const partitioned = relay(broker, { partitions: 2 });
    await partitioned.start();
    const messages = Array.from({ length: 200 }, (_, n) => ({ id: `m${n}`, topic: 'orders', key: `k${n % 10}`, payload: n }));
    for (let n = 0; n < 200; n += 20) await commit(messages.slice(n, n + 20));
    await until(() => new Set(ids(broker)).size === 200, 'all 200 messages');
    expect(partitioned.status().partitions.map((p) => p.slot)).toEqual([`${slot}_0`, `${slot}_1`]);
    for (let key = 0; key < 10; key++) {
      const sent = broker.received().filter((m) => m.key === `k${key}`).map((m) => Number(m.id.slice(1)));
      expect(sent).toEqual([...sent].sort((a, b) => a - b));
    }
    // Both slots carried some of them.
    const streamed = await Promise.all([0, 1].map(async (i) => (await slotStatus(h.db, `${slot}_${i}`)).exists));
    expect(streamed).toEqual([true, true]);
  });

  it('a standby takes over within 5 s of the active relay process being killed (SIGKILL), and nothing is lost', async () => {
    await setUp();
    const script = new URL('../support/logical-relay-process.ts', import.meta.url).pathname;
    const url = inject('pgUrl');
    const child = fork(script, ['postgres', url, h.schema, slot, publication, url], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const fromChild: string[] = [];
    let childOwns = false;
    child.on('message', (message: { owned?: boolean; published?: string[] }) => {
      if (message.owned !== undefined) childOwns = message.owned;
      if (message.published) fromChild.push(...message.published);
    });
    try {
      await until(() => childOwns, 'the child relay to hold the slot');
      const broker = new MemoryBroker();
      const standby = relay(broker);
      await standby.start();
      await commit(Array.from({ length: 50 }, (_, n) => ({ id: `before${n}`, topic: 'orders', key: `k${n % 5}`, payload: n })));
      await until(() => fromChild.length >= 50, 'the child relay to publish');
      expect(standby.status().partitions[0]!.owned).toBe(false);
      const killed = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await killed;
      const gone = Date.now();
      await commit(Array.from({ length: 50 }, (_, n) => ({ id: `after${n}`, topic: 'orders', key: `k${n % 5}`, payload: n })));
      await until(() => ids(broker).filter((id) => id.startsWith('after')).length === 50, 'the standby to publish', 5000);
      expect(Date.now() - gone).toBeLessThan(5000);
      await until(async () => (await pendingRows()) === 0, 'nothing pending');
      // Every message went out (some of the child's last ones perhaps twice: at-least-once), each key in order.
      expect(new Set([...fromChild, ...ids(broker)]).size).toBe(100);
      for (let key = 0; key < 5; key++) {
        const after = broker.received().filter((m) => m.key === `k${key}` && m.id.startsWith('after')).map((m) => Number(m.id.slice(5)));
        expect(after).toEqual([...after].sort((a, b) => a - b));
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it('a message that kills the relay process on every publish is dead after maxAttempts takeovers; all the others go out', async () => {
    await setUp();
    const script = new URL('../support/logical-relay-process.ts', import.meta.url).pathname;
    const url = inject('pgUrl');
    const published: string[] = [];
    let crashes = 0;
    const startChild = async () => {
      const child = fork(script, ['postgres', url, h.schema, slot, publication, url, 'poison'], {
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.on('message', (message: { published?: string[] }) => {
        if (message.published) published.push(...message.published);
      });
      return { child, exited };
    };
    let current = await startChild();
    // Once it has published a message it streamed, the child is past its takeover: what follows reaches it live,
    // so its first crash is one no attempt was counted for (later takeovers count the poison before publishing it).
    await commit([{ id: 'warm', topic: 'orders', key: 'w', payload: 0 }]);
    await until(() => published.includes('warm'), 'the child relay to stream');
    await commit([
      ...Array.from({ length: 10 }, (_, n) => ({ id: `a${n}`, topic: 'orders', key: `k${n % 3}`, payload: n })),
      { id: 'poison', topic: 'orders', key: 'P', payload: 0 },
      ...Array.from({ length: 10 }, (_, n) => ({ id: `b${n}`, topic: 'orders', key: `k${n % 3}`, payload: n })),
    ]);
    try {
      const deadline = Date.now() + 60_000;
      let exited = false;
      void current.exited.then(() => (exited = true));
      while ((await pendingRows()) > 0) {
        if (Date.now() > deadline) throw new Error('timed out waiting for the outbox to drain');
        if (exited) {
          crashes++;
          expect(crashes, 'crashes before the poison went dead').toBeLessThanOrEqual(4);
          exited = false;
          current = await startChild();
          void current.exited.then(() => (exited = true));
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const { rows } = await sql<{ id: string; state: string }>`SELECT id, state FROM ${sql.id(h.schema, 'txoutbox')}`.execute(h.db);
      expect(rows).toEqual([{ id: 'poison', state: 'dead' }]);
      expect(crashes).toBe(4);
      const others = new Set(published);
      for (const id of [...Array.from({ length: 10 }, (_, n) => `a${n}`), ...Array.from({ length: 10 }, (_, n) => `b${n}`)]) expect(others).toContain(id);
    } finally {
      current.child.kill('SIGKILL');
      await current.exited;
    }
  });

  it('a replication connection refused its slot (held by another relay) is closed, not left holding a WAL sender', async () => {
    await setUp();
    const holder = relay(new MemoryBroker());
    await holder.start();
    await until(() => holder.status().partitions[0]!.owned, 'the relay to hold the slot');
    const walSenders = async () =>
      Number(
        (
          await sql<{ n: string }>`
            SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'walsender' AND query LIKE ${`%${slot}%`}`.execute(h.db)
        ).rows[0]!.n,
      );
    const refused = new SlotStream(inject('pgUrl'), slot, publication, { schema: h.schema, name: 'txoutbox' }, {
      transaction: () => undefined,
      caughtUp: () => undefined,
      started: () => undefined,
    });
    for (let attempt = 0; attempt < 3; attempt++) await expect(refused.run(0n)).rejects.toThrow(/is active for PID/);
    await until(async () => (await walSenders()) === 1, 'only the holder to have a WAL sender');
  });

  it('refuses what logical mode cannot do: MySQL, and notify', () => {
    expect(() => createRelay({ db: h.db, dialect: 'mysql', broker: new MemoryBroker(), mode: 'logical' })).toThrow(/dialect 'postgres'/);
    expect(() => h.createOutbox({ mode: 'logical', notify: true })).toThrow(/notify/);
  });
});
