import { sql, type ControlledTransaction } from 'kysely';
import { OK, permanent, retryable, unreachable } from '../../../src/brokers/outcomes.js';
import type { Outcome } from '../explorer.js';
import { check, type History } from '../oracle.js';
import { LogicalRelayActor } from './relay-actor.js';
import type { LogicalSchedule, LogicalTxPlan } from './schedule.js';
import type { LogicalWorld } from './world.js';

const HOUR_MS = 60 * 60 * 1000;
/** After a move, the world is still once no relay asked the broker anything for this long (or at most QUIET_MAX_MS). */
const QUIET_MS = 8;
const QUIET_MAX_MS = 200;
/** Once the faults stop, everything committed must be out within this long. */
const DRAIN_MS = 20_000;
const MOVE_TIMEOUT_MS = 15_000;

let runs = 0;

interface Producer {
  tx: number;
  plan: LogicalTxPlan;
  steps: string[];
  next: number;
  trx: ControlledTransaction<any> | null;
  pid: number | null;
  /** A COMMIT waiting for the standby: resolves once it returned. */
  waiting: Promise<void> | null;
}

interface Move {
  weight: number;
  name: string;
  run: () => Promise<void>;
}

/**
 * Runs one logical-mode schedule on the world's real cluster: producers (some of whose commits wait, streamed but
 * invisible, until released; some of whose messages are delayed), one to three relays streaming one slot, and a
 * broker each whose every publish the picks answer (ack, fail, down, poison) — or a relay crashes, is cut from the
 * server, or stops cleanly, at any of those points, and time passes for what waits in the table. Then the faults
 * stop and the relays must deliver everything. The oracle is the polling explorer's, plus: without a crash or a cut
 * connection, nothing is published twice.
 */
export async function runLogicalSchedule(world: LogicalWorld, schedule: LogicalSchedule): Promise<Outcome> {
  const run = ++runs;
  await world.reset();
  const trace: string[] = [];
  const failures: string[] = [];
  let moves = 0;
  const log = (line: string): void => {
    trace.push(`${String(moves).padStart(4)}. ${line}`);
    if (process.env.EXPLORE_TRACE === '1') console.error(`[${run}] ${trace.at(-1)}`);
  };
  const history: History = {
    messages: new Map(),
    committedAt: new Map(),
    rolledBack: new Set(),
    delivered: [],
    dead: new Set(),
    written: new Set(),
    wrote: new Set(),
  };
  /** A crash or a cut connection happened: the relays may publish a message twice (at least once, not exactly). */
  let resends = false;
  const settings = { maxAttempts: schedule.maxAttempts, batchSize: schedule.batchSize };
  const relays = Array.from({ length: schedule.relays }, (_, i) => new LogicalRelayActor(`R${i + 1}`, world, settings));
  const producers: Producer[] = schedule.txs.map((plan, i) => ({
    tx: i + 1,
    plan,
    steps: ['begin', ...plan.keys.map((key) => `enqueue ${key}`), plan.commit ? 'commit' : 'rollback'],
    next: 0,
    trx: null,
    pid: null,
    waiting: null,
  }));

  const produce = async (p: Producer) => {
    const step = p.steps[p.next++]!;
    if (step === 'begin') {
      p.trx = await world.producers.startTransaction().execute();
      p.pid = (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(p.trx)).rows[0]!.pid;
      if (!p.plan.waits) await sql`SET LOCAL synchronous_commit = local`.execute(p.trx);
    } else if (step === 'commit' && p.plan.waits) {
      const trx = p.trx!;
      p.waiting = trx
        .commit()
        .execute()
        .then(() => void history.committedAt.set(p.tx, moves));
      p.waiting.catch(() => undefined);
      // In the WAL and streamed once its backend waits for the standby.
      await until(async () => {
        const { rows } = await sql`SELECT 1 FROM pg_stat_activity WHERE pid = ${p.pid} AND wait_event = 'SyncRep'`.execute(world.admin);
        return rows.length > 0;
      }, `t${p.tx}'s commit to wait for the standby`);
      log(`t${p.tx} commit (waits for the standby)`);
      return;
    } else if (step === 'commit') {
      await p.trx!.commit().execute();
      history.committedAt.set(p.tx, moves);
    } else if (step === 'rollback') {
      await p.trx!.rollback().execute();
      history.rolledBack.add(p.tx);
    } else {
      const key = step.slice('enqueue '.length);
      const index = p.steps.slice(0, p.next).filter((s) => s.startsWith('enqueue ')).length;
      const id = `t${p.tx}.${index}@${run}`;
      const delayed = p.plan.delayed && index === 1;
      await world.outbox.enqueue(p.trx!, { id, topic: 'explore', key, payload: id, ...(delayed ? { delayMs: HOUR_MS } : {}) });
      history.messages.set(id, { key, tx: p.tx, index, enqueuedAt: moves });
      log(`t${p.tx} enqueue ${key} -> ${id}${delayed ? ' (due in an hour)' : ''}`);
      return;
    }
    log(`t${p.tx} ${step}`);
  };

  const release = async (p: Producer) => {
    await sql`SELECT pg_cancel_backend(${p.pid})`.execute(world.admin);
    await p.waiting;
    p.waiting = null;
    log(`t${p.tx} commit returns (its wait released)`);
  };

  const answer = (relay: LogicalRelayActor, how: 'ack' | 'fail' | 'down' | 'poison') => {
    const call = relay.calls[0]!;
    const outcome =
      how === 'ack'
        ? OK
        : how === 'fail'
          ? retryable('explorer: refused')
          : how === 'down'
            ? unreachable('explorer: broker down')
            : permanent('explorer: poison');
    if (how === 'ack') history.delivered.push(...call.messages.map((m) => m.id));
    log(`broker ${how} [${call.messages.map((m) => m.id).join(', ')}] from ${relay.name}`);
    call.answer(call.messages.map(() => outcome));
  };

  const table = sql.id(world.schema, 'txoutbox');
  /**
   * Time passes for the table: delayed and retrying rows are due now, and so are rows leased to incarnations that
   * crashed or stopped; not a running relay's (a lease running out under a publish still going is a resend).
   */
  const timePasses = async (said = true) => {
    const live = relays.filter((r) => r.running).map((r) => `${r.instanceId}:%`);
    await sql`
      UPDATE ${table} SET next_attempt_at = now(), lease_until = NULL
      WHERE state = 'pending' AND deferred_lsn IS NOT NULL AND next_attempt_at > now()
        AND (lease_until IS NULL OR NOT (lease_owner LIKE ANY(${live}::text[])))`.execute(world.admin);
    for (const relay of relays) relay.kick();
    if (said) log('time passes: what waits in the table is due');
  };

  const enabled = (): Move[] => {
    const list: Move[] = [];
    for (const p of producers) {
      if (p.waiting !== null) list.push({ weight: 1, name: `release t${p.tx}`, run: () => release(p) });
      else if (p.next < p.steps.length) list.push({ weight: 3, name: `t${p.tx}`, run: () => produce(p) });
    }
    for (const r of relays) {
      if (!r.running) {
        list.push({ weight: 2, name: `start ${r.name}`, run: async () => (await r.start(), log(`${r.name} starts (${r.instanceId})`)) });
        continue;
      }
      if (r.calls.length > 0) {
        list.push({ weight: 4, name: `ack ${r.name}`, run: async () => answer(r, 'ack') });
        list.push({ weight: 1, name: `fail ${r.name}`, run: async () => answer(r, 'fail') });
        list.push({ weight: 1, name: `down ${r.name}`, run: async () => answer(r, 'down') });
        list.push({ weight: 1, name: `poison ${r.name}`, run: async () => answer(r, 'poison') });
        list.push({
          weight: 1,
          name: `crash-sent ${r.name}`,
          run: async () => {
            history.delivered.push(...r.calls[0]!.messages.map((m) => m.id));
            resends = true;
            log(`${r.name} crashes after the broker took [${r.calls[0]!.messages.map((m) => m.id).join(', ')}]`);
            await r.crash();
          },
        });
      }
      list.push({ weight: 1, name: `crash ${r.name}`, run: async () => ((resends = true), log(`${r.name} crashes`), await r.crash()) });
      list.push({ weight: 1, name: `cut ${r.name}`, run: async () => ((resends = true), log(`${r.name}'s replication connection is cut`), await r.cut()) });
      list.push({ weight: 1, name: `stop ${r.name}`, run: async () => (log(`${r.name} stops cleanly`), await r.stop()) });
    }
    list.push({ weight: 1, name: 'time passes', run: timePasses });
    return list;
  };

  /** Waits until no relay has asked the broker anything for a moment: the move's effects have settled. */
  const quiet = async () => {
    const began = Date.now();
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, QUIET_MS));
      const last = Math.max(...relays.map((r) => r.lastActivity));
      if (Date.now() - last >= QUIET_MS || Date.now() - began > QUIET_MAX_MS) return;
    }
  };

  const timed = async (name: string, run: () => Promise<void>) => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`move ${moves} (${name}) did not return within ${MOVE_TIMEOUT_MS} ms`)), MOVE_TIMEOUT_MS);
    });
    try {
      await Promise.race([run(), late]);
    } finally {
      clearTimeout(timer);
    }
    moves++;
    await quiet();
  };

  const broken: string[] = [];
  try {
    await relays[0]!.start();
    log(`R1 starts (${relays[0]!.instanceId})`);
    for (const pick of schedule.picks) {
      const list = enabled();
      const total = list.reduce((sum, m) => sum + m.weight, 0);
      let at = pick % total;
      const move = list.find((m) => (at -= m.weight) < 0)!;
      await timed(move.name, move.run);
    }
    // Faults stop: commits complete, transactions end as planned, a relay runs, the broker acks everything.
    log('--- faults stop ---');
    for (const p of producers) {
      if (p.waiting !== null) await timed(`release t${p.tx}`, () => release(p));
      while (p.next < p.steps.length) {
        await timed(`t${p.tx}`, () => produce(p));
        if (p.waiting !== null) await timed(`release t${p.tx}`, () => release(p));
      }
    }
    if (!relays.some((r) => r.running)) await relays[0]!.start();
    const deadline = Date.now() + DRAIN_MS;
    let drained = false;
    while (!drained && Date.now() < deadline) {
      for (const r of relays) while (r.calls.length > 0) answer(r, 'ack');
      await timePasses(false);
      await new Promise((resolve) => setTimeout(resolve, 20));
      const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${table} WHERE state = 'pending'`.execute(world.admin);
      drained = Number(rows[0]!.n) === 0 && relays.every((r) => r.calls.length === 0);
    }
    if (!drained) broken.push(`stall: messages still pending ${DRAIN_MS / 1000} s after the faults stopped`);
  } catch (error) {
    failures.push(error instanceof Error ? error.message : String(error));
  } finally {
    for (const p of producers) {
      if (p.waiting !== null) await release(p).catch(() => undefined);
      if (p.trx !== null && p.next < p.steps.length)
        await p.trx
          .rollback()
          .execute()
          .catch(() => undefined);
    }
    for (const r of relays) {
      await r.stop(1000).catch(() => undefined);
      await r.bury();
    }
  }
  broken.push(...failures);
  const { rows: dead } = await sql<{ id: string }>`SELECT id FROM ${table} WHERE state = 'dead'`.execute(world.admin);
  history.dead = new Set(dead.map((row) => row.id));
  broken.push(...check(history));
  if (!resends) {
    const seen = new Set<string>();
    for (const id of history.delivered) {
      if (seen.has(id)) broken.push(`${id} was published twice, in a run without crashes or cut connections`);
      seen.add(id);
    }
  }
  return { trace, broken };
}

async function until(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
