import { sql } from 'kysely';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';
import { lockKeyStripes } from './key-locks.js';

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
   * Gives each key without a head its head: the first of its waiting messages or of the given arrivals (key →
   * first arrival's seq, or null), and puts the other arrivals behind it. Returns how many heads it made.
   */
  promote(trx: SqlExecutor, keys: ReadonlyMap<string, string | null>, arrivals: readonly string[]): Promise<number>;
  /** Sequences up to `limit` arrivals, oldest first (skipping those another relay is sequencing). Returns heads made. */
  sequence(trx: SqlExecutor, limit: number): Promise<number>;
}

export function mysqlHeads(names: TableNames): MysqlHeads {
  const table = qualified(names, names.table);
  const lock: MysqlHeads['lock'] = (trx, keys) => lockKeyStripes(trx, names, keys);

  const promote: MysqlHeads['promote'] = async (trx, keys, arrivals) => {
    const newHeads: string[] = [];
    if (keys.size > 0) {
      const keyRows = sql.join(
        [...keys.keys()].map((key, index) =>
          index === 0 ? sql`SELECT ${Buffer.from(key)} AS msg_key` : sql`SELECT ${Buffer.from(key)}`,
        ),
        sql` UNION ALL `,
      );
      const { rows } = await trx(
        sql`
        SELECT k.msg_key,
          EXISTS (SELECT 1 FROM ${table} AS h WHERE h.msg_key = k.msg_key AND h.state IN ('pending', 'dead') AND h.ready = 1) AS has_head,
          (SELECT w.seq FROM ${table} AS w WHERE w.msg_key = k.msg_key AND w.state = 'pending' AND w.ready = 0 ORDER BY w.seq LIMIT 1) AS waiting
        FROM (${keyRows}) AS k`.compile(compiler),
      );
      for (const row of rows) {
        if (Number(row.has_head) === 1) continue;
        const candidates = [row.waiting, keys.get(text(row.msg_key))]
          .filter((seq) => seq !== null && seq !== undefined)
          .map((seq) => BigInt(seq as string));
        if (candidates.length > 0) newHeads.push(String(candidates.reduce((a, b) => (a < b ? a : b))));
      }
    }
    const touched = new Set([...arrivals, ...newHeads]);
    if (touched.size === 0) return 0;
    const heads = newHeads.length === 0 ? sql`0` : sql`seq IN (${seqList(newHeads)})`;
    await trx(
      sql`UPDATE ${table} SET ready = (msg_key IS NULL OR ${heads}) WHERE seq IN (${seqList(touched)})`.compile(compiler),
    );
    return newHeads.length;
  };

  return {
    lock,
    promote,
    async sequence(trx, limit) {
      const { rows } = await trx(
        sql`SELECT seq, msg_key FROM ${table} WHERE ready IS NULL ORDER BY seq LIMIT ${limit} FOR UPDATE SKIP LOCKED`.compile(
          compiler,
        ),
      );
      if (rows.length === 0) return 0;
      const firstArrival = new Map<string, string | null>();
      for (const row of rows) {
        // A keyless arrival (written by an older producer) simply becomes ready.
        if (row.msg_key !== null && !firstArrival.has(text(row.msg_key))) firstArrival.set(text(row.msg_key), String(row.seq));
      }
      await lock(trx, firstArrival.keys());
      return promote(
        trx,
        firstArrival,
        rows.map((row) => String(row.seq)),
      );
    },
  };
}
