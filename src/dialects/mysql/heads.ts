import { sql } from 'kysely';
import { SchemaError } from '../../errors.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified, rowsBySeq } from './compiler.js';
import type { ScanCursor } from '../scan-cursor.js';
import { lockKeyStripes } from './key-locks.js';

/** The lock row of the one relay that sequences at a time (key stripes are 0 to 4095). */
const SEQUENCER_STRIPE = 65535;
const text = (value: unknown) => (Buffer.isBuffer(value) ? value.toString('utf8') : String(value));
const seqList = (seqs: Iterable<string>) => sql.join([...seqs].map((seq) => sql`${BigInt(seq)}`));

/**
 * Which message of a key may be published next is decided here, by relays only: producers just insert. A keyed
 * message arrives unsequenced (ready NULL); a relay makes it its key's head (ready 1) or puts it behind the head
 * (ready 0); when a head is sent (or dead under 'skip'), the next waiting message becomes the head. Every such
 * decision runs under the keys' stripe locks, which only relays take, with statements that read what is committed
 * after the locks were granted (READ COMMITTED), so two relays never make two heads. Nothing waits for a producer.
 */
export interface MysqlHeads {
  lock(trx: SqlExecutor, keys: Iterable<string>): Promise<void>;
  /**
   * Gives each of these keys without a head its head: its first message that is waiting or among the given
   * arrivals (never one after an earlier arrival another relay is still sequencing), and puts the other arrivals
   * behind it. Returns how many heads it made.
   */
  promote(trx: SqlExecutor, keys: Iterable<string>, arrivals: readonly string[]): Promise<number>;
  /**
   * Moves these rows (arrivals, or dead letters made pending again) behind their key's head when they have a lower
   * seq than it: each is written again with a new seq, waiting. Returns the old seqs.
   */
  renumberLate(trx: SqlExecutor, rows: readonly { seq: string; key: string | null }[]): Promise<Set<string>>;
  /** Sequences up to `limit` arrivals, oldest first, from the cursor on (skipping those another relay is sequencing). */
  sequence(trx: SqlExecutor, limit: number, cursor: ScanCursor<string>): Promise<number>;
}

export function mysqlHeads(names: TableNames): MysqlHeads {
  const table = qualified(names, names.table);
  const lock: MysqlHeads['lock'] = (trx, keys) => lockKeyStripes(trx, names, keys);

  const promote: MysqlHeads['promote'] = async (trx, keys, arrivals) => {
    const newHeads: string[] = [];
    const keyList = [...new Set(keys)];
    const ours = new Set(arrivals);
    if (keyList.length > 0) {
      const keyRows = sql.join(
        keyList.map((key, index) => (index === 0 ? sql`SELECT ${Buffer.from(key)} AS msg_key` : sql`SELECT ${Buffer.from(key)}`)),
        sql` UNION ALL `,
      );
      // Index seeks per key on key_idx (msg_key, state, ready, seq), forced: left to itself the optimizer may read
      // every head of every key through arrival_idx (ready, seq) for the head check.
      const { rows } = await trx(
        sql`
        SELECT k.msg_key,
          EXISTS (SELECT 1 FROM ${table} AS h FORCE INDEX (key_idx)
                  WHERE h.msg_key = k.msg_key AND h.state IN ('pending', 'dead') AND h.ready = 1) AS has_head,
          (SELECT w.seq FROM ${table} AS w FORCE INDEX (key_idx)
           WHERE w.msg_key = k.msg_key AND w.state = 'pending' AND w.ready = 0 ORDER BY w.seq LIMIT 1) AS waiting,
          (SELECT u.seq FROM ${table} AS u FORCE INDEX (key_idx)
           WHERE u.msg_key = k.msg_key AND u.state = 'pending' AND u.ready IS NULL ORDER BY u.seq LIMIT 1) AS unsequenced
        FROM (${keyRows}) AS k`.compile(compiler),
      );
      for (const row of rows) {
        if (Number(row.has_head) === 1) continue;
        const first = [row.waiting, row.unsequenced]
          .filter((seq) => seq !== null && seq !== undefined)
          .map((seq) => BigInt(seq as string))
          .reduce<bigint | null>((a, b) => (a === null || b < a ? b : a), null);
        if (first === null) continue;
        const seq = String(first);
        // The first message is waiting, or one of ours; an unsequenced one of another relay's is left to it.
        if (String(row.waiting) === seq || ours.has(seq)) newHeads.push(seq);
      }
    }
    const touched = new Set([...arrivals, ...newHeads]);
    if (touched.size === 0) return 0;
    const heads = newHeads.length === 0 ? sql`0` : sql`t.seq IN (${seqList(newHeads)})`;
    // A new head is due from now at the earliest, so claims that scan on from their cursor find it.
    await trx(
      sql`
      UPDATE ${rowsBySeq(table, [...touched])}
      SET t.next_attempt_at = CASE WHEN t.msg_key IS NULL OR ${heads} THEN GREATEST(t.next_attempt_at, UTC_TIMESTAMP(6)) ELSE t.next_attempt_at END,
          t.ready = (t.msg_key IS NULL OR ${heads})
      WHERE t.ready IS NULL OR ${heads}`.compile(compiler),
    );
    return newHeads.length;
  };

  const renumberLate: MysqlHeads['renumberLate'] = async (trx, candidates) => {
    const keyed = candidates.filter((row) => row.key !== null);
    if (keyed.length === 0) return new Set();
    const { rows } = await trx(
      sql`
      SELECT t.seq, t.id, t.topic, t.msg_key, t.payload, t.content_type, t.headers, t.attempts, t.last_error,
             DATE_FORMAT(t.next_attempt_at, '%Y-%m-%d %H:%i:%s.%f') AS next_attempt_at,
             DATE_FORMAT(t.created_at, '%Y-%m-%d %H:%i:%s.%f') AS created_at
      FROM ${rowsBySeq(
        table,
        keyed.map((row) => row.seq),
      )}
      WHERE EXISTS (SELECT 1 FROM ${table} AS h FORCE INDEX (key_idx)
                    WHERE h.msg_key = t.msg_key AND h.state IN ('pending', 'dead') AND h.ready = 1 AND h.seq > t.seq)
      ORDER BY t.seq`.compile(compiler),
    );
    if (rows.length === 0) return new Set();
    const late = rows.map((row) => String(row.seq));
    await trx(sql`DELETE t FROM ${rowsBySeq(table, late)}`.compile(compiler));
    const values = rows.map(
      (row) => sql`(${row.id}, ${row.topic}, ${row.msg_key}, ${row.payload}, ${row.content_type},
        ${typeof row.headers === 'string' ? row.headers : JSON.stringify(row.headers)}, 0, ${row.attempts},
        CAST(${row.next_attempt_at} AS DATETIME(6)), ${row.last_error}, CAST(${row.created_at} AS DATETIME(6)))`,
    );
    await trx(
      sql`
      INSERT INTO ${table} (id, topic, msg_key, payload, content_type, headers, ready, attempts, next_attempt_at, last_error, created_at)
      VALUES ${sql.join(values)}`.compile(compiler),
    );
    return new Set(late);
  };

  return {
    lock,
    promote,
    renumberLate,
    async sequence(trx, limit, cursor) {
      // One sequencer per table at a time (the others go on claiming), and no arrival row locked before the key
      // stripes: a locking read of arrivals would hold index records that another relay, holding a stripe, must
      // change (a deadlock between relays).
      const { rows: turn } = await trx(
        sql`SELECT stripe FROM ${qualified(names, names.keyLocks)} WHERE stripe = ${SEQUENCER_STRIPE} FOR UPDATE SKIP LOCKED`.compile(
          compiler,
        ),
      );
      if (turn.length === 0) {
        // Another relay's turn, or the row is missing (a table migrated before 002): the second must be said.
        const { rows: row } = await trx(
          sql`SELECT stripe FROM ${qualified(names, names.keyLocks)} WHERE stripe = ${SEQUENCER_STRIPE}`.compile(compiler),
        );
        if (row.length === 0)
          throw new SchemaError(`The key lock table ${names.keyLocks} is missing rows (the sequencer's, ${SEQUENCER_STRIPE}).`);
        return 0;
      }
      const from = cursor.from();
      const { rows } = await trx(
        sql`
          SELECT seq, msg_key FROM ${table} WHERE ready IS NULL ${from === null ? sql`` : sql`AND seq > ${BigInt(from)}`}
          ORDER BY seq LIMIT ${limit}`.compile(compiler),
      );
      cursor.scanned(rows.length, limit);
      if (rows.length === 0) return 0;
      cursor.advance(String(rows[rows.length - 1]!.seq));
      // A keyless arrival (written by an older producer) simply becomes ready.
      const keys = new Set(rows.flatMap((row) => (row.msg_key === null ? [] : [text(row.msg_key)])));
      await lock(trx, keys);
      // An arrival that committed after a later message of its key became the head goes behind it, renumbered.
      const late = await renumberLate(
        trx,
        rows.map((row) => ({ seq: String(row.seq), key: row.msg_key === null ? null : text(row.msg_key) })),
      );
      return promote(
        trx,
        keys,
        rows.map((row) => String(row.seq)).filter((seq) => !late.has(seq)),
      );
    },
  };
}
