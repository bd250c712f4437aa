import { sql, type RawBuilder } from 'kysely';
import { SchemaError } from '../../errors.js';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified, rowsBySeq } from './compiler.js';
import type { ScanCursor } from '../scan-cursor.js';
import { lockKeyStripes } from './key-locks.js';

/** The lock row of the one relay that sequences at a time (key stripes are 0 to 4095). */
const SEQUENCER_STRIPE = 65535;
const text = (value: unknown) => (Buffer.isBuffer(value) ? value.toString('utf8') : String(value));
const ER_LOCK_WAIT_TIMEOUT = 1205;
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
   * behind it. `floors` are the seqs of heads just finished: nothing of a key waits below its head (see
   * renumberLate), so its next message is sought from there on. Returns how many heads it made.
   */
  promote(
    trx: SqlExecutor,
    keys: Iterable<string>,
    arrivals: readonly string[],
    floors?: ReadonlyMap<string, string>,
  ): Promise<number>;
  /**
   * Moves these rows (arrivals, or dead letters made pending again) behind their key's queue when one of them has a
   * lower seq than a message already in it (the head or one waiting): all the key's given rows are written again,
   * in seq order, with new seqs, waiting. Returns the old seqs.
   */
  renumberLate(trx: SqlExecutor, rows: readonly { seq: string; key: string | null }[]): Promise<Set<string>>;
  /**
   * Sequences these keys' arrivals now, for a caller that holds the keys' locks and is about to put something
   * behind their queues (a retried dead letter: everything committed before the retry comes first).
   */
  sequenceKeys(trx: SqlExecutor, keys: Iterable<string>): Promise<void>;
  /** Sequences up to `limit` arrivals, oldest first, from the cursor on (skipping those another relay is sequencing). */
  sequence(trx: SqlExecutor, limit: number, cursor: ScanCursor<string>): Promise<number>;
}

/** One row a key probe found: a head, or a key's first waiting or unsequenced message. */
interface ProbeRow {
  what: string;
  key: string;
  seq: bigint;
}

export function mysqlHeads(names: TableNames): MysqlHeads {
  const table = qualified(names, names.table);
  const lock: MysqlHeads['lock'] = (trx, keys) => lockKeyStripes(trx, names, keys);

  /**
   * One statement of per-key index probes, each a UNION ALL part with literal bounds, so that every one is a range
   * read of key_idx (msg_key, state, ready, seq) that starts where it should. A correlated subquery could only use
   * the key's equality prefix and would read the key's entries from the lowest seq up: while any transaction is
   * open InnoDB purges nothing, and those are all the entries the key's earlier messages left behind, each checked
   * against the clustered index.
   */
  const probe = async (trx: SqlExecutor, parts: readonly RawBuilder<unknown>[]): Promise<ProbeRow[]> => {
    if (parts.length === 0) return [];
    const { rows } = await trx(sql.join(parts, sql` UNION ALL `).compile(compiler));
    return rows.map((row) => ({ what: String(row.what), key: text(row.msg_key), seq: BigInt(row.seq as string) }));
  };
  const part = (what: string, key: string, where: RawBuilder<unknown>, order: RawBuilder<unknown>) =>
    sql`(SELECT ${what} AS what, msg_key, seq FROM ${table} FORCE INDEX (key_idx)
         WHERE msg_key = ${Buffer.from(key)} AND ${where} ORDER BY seq ${order} LIMIT 1)`;

  /**
   * Each key's head (pending or dead, from its floor on), read from the top of the key's head entries down:
   * entries that heads sent earlier left behind all lie below the current head.
   */
  const above = (floors: ReadonlyMap<string, string>, key: string) => BigInt(floors.get(key) ?? 0);
  const headParts = (keys: readonly string[], floors: ReadonlyMap<string, string>) =>
    keys.flatMap((key) =>
      (['pending', 'dead'] as const).map((state) =>
        part('head', key, sql`state = ${state} AND ready = 1 AND seq >= ${above(floors, key)}`, sql`DESC`),
      ),
    );
  const headsIn = (found: readonly ProbeRow[]) => {
    const heads = new Map<string, bigint>();
    for (const row of found) if (row.what === 'head' && (heads.get(row.key) ?? -1n) < row.seq) heads.set(row.key, row.seq);
    return heads;
  };
  /** The first waiting and the first unsequenced message of each key, from its floor on. */
  const firstParts = (keys: readonly string[], floors: ReadonlyMap<string, string>) =>
    keys.flatMap((key) => [
      part('waiting', key, sql`state = 'pending' AND ready = 0 AND seq > ${above(floors, key)}`, sql`ASC`),
      part('unsequenced', key, sql`state = 'pending' AND ready IS NULL AND seq > ${above(floors, key)}`, sql`ASC`),
    ]);

  const promoteWithout = async (
    trx: SqlExecutor,
    keyList: readonly string[],
    heads: ReadonlyMap<string, bigint>,
    arrivals: readonly string[],
    floors: ReadonlyMap<string, string>,
    known: readonly ProbeRow[] | null = null,
  ) => {
    const ours = new Set(arrivals);
    const headless = keyList.filter((key) => !heads.has(key));
    const firsts = known ?? (await probe(trx, firstParts(headless, floors)));
    const first = new Map<string, { seq: bigint; what: string }>();
    for (const row of firsts) {
      if (row.what === 'head' || heads.has(row.key)) continue;
      const known = first.get(row.key);
      if (known === undefined || row.seq < known.seq) first.set(row.key, row);
    }
    // The first message is waiting, or one of ours; an unsequenced one of another relay's is left to it.
    const newHeads = [...first.values()]
      .filter((row) => row.what === 'waiting' || ours.has(String(row.seq)))
      .map((row) => String(row.seq));
    const touched = new Set([...arrivals, ...newHeads]);
    if (touched.size === 0) return 0;
    const isHead = newHeads.length === 0 ? sql`0` : sql`t.seq IN (${seqList(newHeads)})`;
    // A new head is due from now at the earliest, so claims that scan on from their cursor find it.
    await trx(
      sql`
      UPDATE ${rowsBySeq(table, [...touched])}
      SET t.next_attempt_at = CASE WHEN t.msg_key IS NULL OR ${isHead} THEN GREATEST(t.next_attempt_at, UTC_TIMESTAMP(6)) ELSE t.next_attempt_at END,
          t.ready = (t.msg_key IS NULL OR ${isHead})
      WHERE t.ready IS NULL OR ${isHead}`.compile(compiler),
    );
    return newHeads.length;
  };

  // One round-trip: heads and first messages read together (a finished head's key usually has no head left).
  const promote: MysqlHeads['promote'] = async (trx, keys, arrivals, floors = new Map()) => {
    const keyList = [...new Set(keys)];
    const found = await probe(trx, [...headParts(keyList, floors), ...firstParts(keyList, floors)]);
    return promoteWithout(trx, keyList, headsIn(found), arrivals, floors, found);
  };

  /** Each key's last waiting message (other than these rows), read from the top of the key's entries down. */
  const lastParts = (keys: readonly string[], except: readonly string[]) => {
    const skip = except.length === 0 ? sql`` : sql`AND seq NOT IN (${seqList(except)})`;
    return keys.map((key) => part('last', key, sql`state = 'pending' AND ready = 0 ${skip}`, sql`DESC`));
  };
  /** Per key, the highest seq of a message in its queue (its head or its last waiting one), as a probe found. */
  const queueTops = (found: readonly ProbeRow[]) => {
    const tops = new Map<string, bigint>();
    for (const row of found)
      if ((row.what === 'head' || row.what === 'last') && (tops.get(row.key) ?? -1n) < row.seq) tops.set(row.key, row.seq);
    return tops;
  };

  /**
   * Moves the candidates of every key with one below the top of its queue (see renumberLate) behind the queue:
   * all that key's candidates, in seq order, written again with new seqs, waiting. Returns the old seqs.
   */
  const renumber = async (
    trx: SqlExecutor,
    candidates: readonly { seq: string; key: string | null }[],
    tops: ReadonlyMap<string, bigint>,
    arrivalsOnly = false,
  ) => {
    const late = new Set(
      candidates.flatMap((row) => (row.key !== null && BigInt(row.seq) < (tops.get(row.key) ?? -1n) ? [row.key] : [])),
    );
    const below = candidates.filter((row) => row.key !== null && late.has(row.key));
    if (below.length === 0) return new Set<string>();
    const { rows } = await trx(
      sql`
      SELECT t.seq, t.id, t.topic, t.msg_key, t.payload, t.content_type, t.headers, t.attempts, t.last_error,
             DATE_FORMAT(t.next_attempt_at, '%Y-%m-%d %H:%i:%s.%f') AS next_attempt_at,
             DATE_FORMAT(t.created_at, '%Y-%m-%d %H:%i:%s.%f') AS created_at
      FROM ${rowsBySeq(
        table,
        below.map((row) => row.seq),
      )}
      -- Arrivals read before the keys' locks were granted: only those still unsequenced move.
      ${arrivalsOnly ? sql`WHERE t.ready IS NULL` : sql``}
      ORDER BY t.seq`.compile(compiler),
    );
    if (rows.length === 0) return new Set<string>();
    const moved = rows.map((row) => String(row.seq));
    const values = rows.map(
      (row) => sql`(${row.id}, ${row.topic}, ${row.msg_key}, ${row.payload}, ${row.content_type},
        ${typeof row.headers === 'string' ? row.headers : JSON.stringify(row.headers)}, 0, ${row.attempts},
        CAST(${row.next_attempt_at} AS DATETIME(6)), ${row.last_error}, CAST(${row.created_at} AS DATETIME(6)))`,
    );
    const rewrite = async () => {
      await trx(sql`DELETE t FROM ${rowsBySeq(table, moved)}`.compile(compiler));
      await trx(
        sql`
        INSERT INTO ${table} (id, topic, msg_key, payload, content_type, headers, ready, attempts, next_attempt_at, last_error, created_at)
        VALUES ${sql.join(values)}`.compile(compiler),
      );
    };
    if (!arrivalsOnly) {
      await rewrite();
      return new Set(moved);
    }
    // The insert's unique check finds the id just deleted and locks the next id of the index, which may be a
    // producer's uncommitted row: the sequencer must not wait for it. Then these keys' arrivals stay unsequenced
    // (all of them, so none overtakes another) and a later scan tries again.
    const { rows: setting } = await trx(sql`SELECT @@SESSION.innodb_lock_wait_timeout AS wait`.compile(compiler));
    await trx(sql`SAVEPOINT txoutbox_renumber`.compile(compiler));
    await trx(sql`SET SESSION innodb_lock_wait_timeout = 0`.compile(compiler));
    try {
      await rewrite();
    } catch (error) {
      if ((error as { errno?: number } | null)?.errno !== ER_LOCK_WAIT_TIMEOUT) throw error;
      await trx(sql`ROLLBACK TO SAVEPOINT txoutbox_renumber`.compile(compiler));
      return new Set(below.map((row) => row.seq));
    } finally {
      await trx(sql`SET SESSION innodb_lock_wait_timeout = ${Number(setting[0]!.wait)}`.compile(compiler));
    }
    return new Set(moved);
  };

  /**
   * The same reads for many keys in a few statements, where every key has the same bounds (no floors): a MAX per
   * key by a loose index scan of key_idx (one index dive per key and part), and the keys' arrivals at or behind
   * `from` (late commits a scan from the cursor passed) by one multi-range read. One UNION part per key and read,
   * as the probes above, costs the server a table open and a plan each: 300 µs a part, held under the key locks.
   */
  const queueReads = (keys: readonly string[], behind: bigint | null) => {
    const keyList = sql.join(keys.map((key) => sql`${Buffer.from(key)}`));
    const top = (what: string, where: RawBuilder<unknown>) =>
      sql`(SELECT ${what} AS what, msg_key, MAX(seq) AS seq FROM ${table} FORCE INDEX (key_idx)
           WHERE msg_key IN (${keyList}) AND ${where} GROUP BY msg_key)`;
    return [
      top('head', sql`state = 'pending' AND ready = 1`),
      top('head', sql`state = 'dead' AND ready = 1`),
      top('last', sql`state = 'pending' AND ready = 0`),
      ...(behind === null
        ? []
        : [
            sql`(SELECT ${'behind'} AS what, msg_key, seq FROM ${table} FORCE INDEX (key_idx)
                 WHERE msg_key IN (${keyList}) AND state = 'pending' AND ready IS NULL AND seq <= ${behind})`,
          ]),
    ];
  };

  /**
   * The keys' heads and the tops of their queues, and, when a scan came from a cursor, the keys' arrivals behind
   * it, in one statement (read under the keys' locks). Rows to leave out (`except`) need the per-key probes.
   */
  const queuesOf = async (trx: SqlExecutor, keys: readonly string[], except: readonly string[], behind: bigint | null = null) => {
    if (keys.length === 0) return { heads: new Map<string, bigint>(), tops: new Map<string, bigint>(), behind: [] };
    const found = await probe(
      trx,
      except.length === 0 ? queueReads(keys, behind) : [...headParts(keys, new Map()), ...lastParts(keys, except)],
    );
    return {
      heads: headsIn(found),
      tops: queueTops(found),
      behind: found.filter((row) => row.what === 'behind').map((row) => ({ seq: String(row.seq), key: row.key })),
    };
  };

  const renumberLate: MysqlHeads['renumberLate'] = async (trx, candidates) => {
    const keys = [...new Set(candidates.flatMap((row) => (row.key === null ? [] : [row.key])))];
    const { tops } = await queuesOf(
      trx,
      keys,
      candidates.map((row) => row.seq),
    );
    return renumber(trx, candidates, tops);
  };

  /**
   * Arrivals of these keys go behind their queues if late, and the keys without a head get one. `behind`: the scan
   * came from this cursor, so the keys' arrivals behind it are sequenced with these (a key's arrivals go together,
   * or one that committed before another's enqueue could go behind it).
   */
  const sequenceArrivals = async (
    trx: SqlExecutor,
    keyList: readonly string[],
    scanned: readonly { seq: string; key: string | null }[],
    behind: bigint | null = null,
  ) => {
    const queues = await queuesOf(trx, keyList, [], behind);
    const known = new Set(scanned.map((row) => row.seq));
    const rows = [...scanned, ...queues.behind.filter((row) => !known.has(row.seq))].sort((a, b) =>
      BigInt(a.seq) < BigInt(b.seq) ? -1 : 1,
    );
    const late = await renumber(trx, rows, queues.tops, true);
    return promoteWithout(
      trx,
      keyList,
      queues.heads,
      rows.map((row) => row.seq).filter((seq) => !late.has(seq)),
      new Map(),
    );
  };

  /** The keys' arrivals, read by the keys' index, then sequenced as a scan would. */
  const sequenceKeys: MysqlHeads['sequenceKeys'] = async (trx, keys) => {
    const keyList = [...new Set(keys)];
    if (keyList.length === 0) return;
    const { rows } = await trx(
      sql
        .join(
          keyList.map(
            (key) => sql`(SELECT seq, msg_key FROM ${table} FORCE INDEX (key_idx)
            WHERE msg_key = ${Buffer.from(key)} AND state = 'pending' AND ready IS NULL)`,
          ),
          sql` UNION ALL `,
        )
        .compile(compiler),
    );
    const arrivals = rows
      .map((row) => ({ seq: String(row.seq), key: text(row.msg_key) }))
      .sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
    await sequenceArrivals(trx, keyList, arrivals);
  };

  return {
    lock,
    promote,
    renumberLate,
    sequenceKeys,
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
      const { rows: scanned } = await trx(
        sql`
          SELECT seq, msg_key FROM ${table} WHERE ready IS NULL ${from === null ? sql`` : sql`AND seq > ${BigInt(from)}`}
          ORDER BY seq LIMIT ${limit}`.compile(compiler),
      );
      cursor.scanned(scanned.length, limit);
      if (scanned.length === 0) return 0;
      cursor.advance(String(scanned[scanned.length - 1]!.seq));
      // A keyless arrival (written by an older producer) simply becomes ready.
      const keys = new Set(scanned.flatMap((row) => (row.msg_key === null ? [] : [text(row.msg_key)])));
      await lock(trx, keys);
      // Arrivals of a key with a later message already in its queue (they committed after it was sequenced) go
      // behind the queue, renumbered: any committed message may follow all those sequenced before it was visible.
      return sequenceArrivals(
        trx,
        [...keys],
        scanned.map((row) => ({ seq: String(row.seq), key: row.msg_key === null ? null : text(row.msg_key) })),
        from === null ? null : BigInt(from),
      );
    },
  };
}
