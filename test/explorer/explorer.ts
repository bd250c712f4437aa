import { sql, type ControlledTransaction } from 'kysely';
import { OK, retryable, unreachable } from '../../src/brokers/outcomes.js';
import { FULL_SCAN_EVERY_MS } from '../../src/dialects/scan-cursor.js';
import { check, type History } from './oracle.js';
import { advance, installVirtualTime } from './virtual-time.js';
import { RelayActor } from './relay-actor.js';
import type { Schedule, TxPlan } from './schedule.js';
import type { World } from './world.js';

/** How far the explorer's clock moves per move: two moves and an open breaker's probe is due. */
const VIRTUAL_MS_PER_MOVE = 5;
/** How far it moves per drain round: scan cursors start from the beginning at least every 4 rounds. */
const VIRTUAL_MS_PER_ROUND = FULL_SCAN_EVERY_MS / 4;
/** A move that takes longer than this waits on something (a lock a producer or another relay holds). */
const MOVE_TIMEOUT_MS = 10_000;
/** A relay run that goes on for this many moves is stuck in a loop. */
const MAX_MOVES = 5_000;

let runs = 0;

export interface Outcome {
  /** The moves as they happened, numbered. */
  trace: string[];
  /** The promises broken (empty: the schedule passed). */
  broken: string[];
}

interface Producer {
  tx: number;
  plan: TxPlan;
  steps: string[];
  next: number;
  trx: ControlledTransaction<any> | null;
}

interface Move {
  weight: number;
  name: string;
  run: () => Promise<void>;
}

/**
 * Runs one schedule on the world's real database (`steer`, for a hand-written interleaving: the moves by name
 * instead of the picks): producers and relays move one at a time as the picks say, then
 * the faults stop and the relays drain. The oracle then compares what the broker accepted with the promises.
 */
export async function runSchedule(world: World, schedule: Schedule, steer?: readonly string[]): Promise<Outcome> {
  installVirtualTime();
  const run = ++runs;
  await world.reset();
  const trace: string[] = [];
  const failures: string[] = [];
  let moves = 0;
  const log = (line: string) => trace.push(`${String(moves).padStart(4)}. ${line}`);
  const history: History = {
    messages: new Map(),
    committedAt: new Map(),
    rolledBack: new Set(),
    delivered: [],
    dead: new Set(),
    written: new Set(),
    wrote: new Set(schedule.txs.flatMap((plan, i) => (plan.write ? [i + 1] : []))),
  };
  const settings = { maxAttempts: schedule.maxAttempts, batchSize: schedule.batchSize };
  const relays = Array.from({ length: schedule.relays }, (_, i) => new RelayActor(`R${i + 1}`, world, settings, log, failures));
  const crashed: string[] = [];
  const producers: Producer[] = schedule.txs.map((plan, i) => ({
    tx: i + 1,
    plan,
    steps: [
      'begin',
      ...plan.keys.map((key) => `enqueue ${key}`),
      ...(plan.write ? ['write'] : []),
      plan.commit ? 'commit' : 'rollback',
    ],
    next: 0,
    trx: null,
  }));

  const produce = async (p: Producer) => {
    const step = p.steps[p.next++]!;
    if (step === 'begin') p.trx = await world.db.startTransaction().execute();
    else if (step === 'write')
      await sql`INSERT INTO ${sql.id(world.schema, 'orders')} (id) VALUES (${`t${p.tx}`})`.execute(p.trx!);
    else if (step === 'commit') {
      await p.trx!.commit().execute();
      history.committedAt.set(p.tx, moves);
    } else if (step === 'rollback') {
      await p.trx!.rollback().execute();
      history.rolledBack.add(p.tx);
    } else {
      const key = step.slice('enqueue '.length);
      const index = p.steps.slice(0, p.next).filter((s) => s.startsWith('enqueue ')).length;
      // Ids never repeat across schedules: InnoDB's unique check of a deleted, not yet purged id takes gap locks
      // that make one producer wait on another (an id reused after its message was sent: not what this explores).
      const id = `t${p.tx}.${index}@${run}`;
      await world.outbox.enqueue(p.trx!, { id, topic: 'explore', key, payload: id });
      history.messages.set(id, { key, tx: p.tx, index, enqueuedAt: moves });
      log(`t${p.tx} enqueue ${key} -> ${id}`);
      return;
    }
    log(`t${p.tx} ${step}`);
  };

  const deliver = async (relay: RelayActor, how: 'ack' | 'fail' | 'down') => {
    const outcome = how === 'ack' ? OK : how === 'fail' ? retryable('explorer: refused') : unreachable('explorer: broker down');
    const gate = relay.gate;
    if (gate?.kind === 'publish') {
      if (how === 'ack') history.delivered.push(...gate.messages.map((m) => m.id));
      log(`broker ${how} [${gate.messages.map((m) => m.id).join(', ')}] from ${relay.name}`);
    }
    await relay.answer(outcome);
  };

  const crash = (relay: RelayActor, sent: boolean) => {
    const gate = relay.gate;
    if (sent && gate?.kind === 'publish') history.delivered.push(...gate.messages.map((m) => m.id));
    log(
      `${relay.name} crashes${gate?.kind === 'publish' ? (sent ? ' after the broker took the batch' : ' before the broker took the batch') : gate?.kind === 'store' ? ` before ${gate.op}` : ''}`,
    );
    crashed.push(`${relay.name}.${crashed.filter((c) => c.startsWith(`${relay.name}.`)).length + 1}`);
    relay.crash();
  };

  const table = sql.id(world.schema, 'txoutbox');
  const now = world.dialect === 'postgres' ? sql`now()` : sql`UTC_TIMESTAMP(6)`;
  /** Time passes for these lease owners: their leases run out, the rows are due again. */
  const expire = async (owners: readonly string[], what: string) => {
    if (owners.length === 0) return;
    const match = sql.join(
      owners.map((owner) => sql`lease_owner LIKE ${`${owner}%`}`),
      sql` OR `,
    );
    // A plain read first, then updates by primary key: a scanning UPDATE would wait on rows a producer has
    // inserted and not committed yet (InnoDB locks every row it passes).
    const { rows } = await sql<{ seq: string | number }>`SELECT seq FROM ${table} WHERE state = 'pending' AND (${match})`.execute(
      world.db,
    );
    const seqs = rows.map((row) => sql`${BigInt(row.seq)}`);
    if (seqs.length > 0)
      await sql`UPDATE ${table} SET lease_until = ${now}, next_attempt_at = ${now} WHERE seq IN (${sql.join(seqs)}) AND state = 'pending' AND (${match})`.execute(
        world.db,
      );
    log(`leases of ${what} run out`);
  };

  const enabled = (): Move[] => {
    const list: Move[] = [];
    for (const p of producers) if (p.next < p.steps.length) list.push({ weight: 3, name: `t${p.tx}`, run: () => produce(p) });
    for (const r of relays) {
      if (r.gate?.kind === 'publish') list.push({ weight: 3, name: `ack ${r.name}`, run: () => deliver(r, 'ack') });
      else list.push({ weight: 3, name: `go ${r.name}`, run: () => r.go() });
    }
    for (const r of relays) {
      if (r.gate?.kind === 'publish') {
        list.push({ weight: 1, name: `fail ${r.name}`, run: () => deliver(r, 'fail') });
        list.push({ weight: 1, name: `down ${r.name}`, run: () => deliver(r, 'down') });
        list.push({ weight: 1, name: `crash-sent ${r.name}`, run: async () => crash(r, true) });
      }
      if (!r.idle) list.push({ weight: 1, name: `crash ${r.name}`, run: async () => crash(r, false) });
      list.push({ weight: 1, name: `expire ${r.name}`, run: () => expire([r.ownerPrefix], `${r.name} (all its incarnations)`) });
    }
    return list;
  };

  const timed = async (name: string, run: () => Promise<void>) => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`move ${moves} (${name}) did not return within ${MOVE_TIMEOUT_MS} ms: it waits on a lock`)),
        MOVE_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([run(), late]);
    } finally {
      clearTimeout(timer);
    }
    moves++;
    advance(VIRTUAL_MS_PER_MOVE);
  };

  const broken: string[] = [];
  try {
    // The faulty part: the picks choose every move.
    for (const pick of steer ?? schedule.picks) {
      const list = enabled();
      const total = list.reduce((sum, m) => sum + m.weight, 0);
      let at = typeof pick === 'number' ? pick % total : 0;
      const move = typeof pick === 'number' ? list.find((m) => (at -= m.weight) < 0)! : list.find((m) => m.name === pick);
      if (move === undefined) throw new Error(`no move ${String(pick)} now; enabled: ${list.map((m) => m.name).join(', ')}`);
      await timed(move.name, move.run);
      if (failures.length > 0) break;
    }
    // Faults stop: transactions end as planned, crashed relays' leases run out, the broker acks everything.
    log('--- faults stop ---');
    for (const p of producers) while (p.next < p.steps.length) await timed(`t${p.tx}`, () => produce(p));
    await expire(
      crashed.map((c) => `${c}:`),
      `crashed relays (${crashed.join(', ') || 'none'})`,
    );
    const rounds = 10 + 4 * history.messages.size;
    let drained = false;
    for (let round = 0; round < rounds && !drained && failures.length === 0; round++) {
      advance(VIRTUAL_MS_PER_ROUND);
      // Each relay runs once to its end: claim, publish (acked), settle.
      for (const r of relays) {
        do await timed(`drain ${r.name}`, () => (r.gate?.kind === 'publish' ? deliver(r, 'ack') : r.go()));
        while (!r.idle && failures.length === 0 && moves < MAX_MOVES);
      }
      if (relays.every((r) => r.idle)) {
        const { rows } = await sql<{ n: string | number }>`
          SELECT count(*) AS n FROM ${table} WHERE state = 'pending' AND (ready IS NULL OR ready = ${world.dialect === 'postgres' ? sql`true` : sql`1`})`.execute(
          world.db,
        );
        drained = Number(rows[0]!.n) === 0;
      }
    }
    if (!drained && failures.length === 0) broken.push(`stall: messages still due after ${rounds} rounds without faults`);
  } catch (error) {
    failures.push(error instanceof Error ? error.message : String(error));
  } finally {
    // Nothing may stay open into the next schedule.
    for (const p of producers)
      if (p.trx !== null && p.next < p.steps.length)
        await p.trx
          .rollback()
          .execute()
          .catch(() => {});
  }
  broken.push(...failures);
  const { rows: dead } = await sql<{ id: unknown }>`SELECT id FROM ${table} WHERE state = 'dead'`.execute(world.db);
  history.dead = new Set(dead.map((row) => String(row.id)));
  const { rows: orders } = await sql<{ id: unknown }>`SELECT id FROM ${sql.id(world.schema, 'orders')}`.execute(world.db);
  history.written = new Set(orders.map((row) => Number(String(row.id).slice(1))));
  broken.push(...check(history));
  return { trace, broken };
}
