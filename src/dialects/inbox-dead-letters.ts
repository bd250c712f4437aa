import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { InboxDeadLetter } from '../dedupe/message.js';
import type { InboxNames, InboxStore } from './inbox-store.js';

/** One of the inbox's tables, qualified with its schema when one is configured. */
export const inboxTable = (names: InboxNames, name: string) =>
  names.schema === null ? sql.id(name) : sql.id(names.schema, name);

/** What differs between the dialects in reading and deleting the inbox's dead letters. */
export interface InboxDeadLetterSql {
  compiler: Kysely<unknown>;
  /** A seq as the dialect binds it against the BIGINT column. */
  seq(seq: string): RawBuilder<unknown>;
  /** Rows of this consumer, or of every consumer for null. */
  ofConsumer(consumer: string | null): RawBuilder<unknown>;
  /** A row as the driver returns it → the stored dead letter. */
  deadLetter(row: Record<string, unknown>): InboxDeadLetter;
}

/** The inbox store's dead-letter queries, the same SQL on both dialects but for the parts above. */
export function inboxDeadLetterQueries(parts: InboxDeadLetterSql): Pick<InboxStore, 'listDead' | 'getDead' | 'deleteDead'> {
  const { compiler, seq, ofConsumer, deadLetter } = parts;
  return {
    async listDead(run, names, { consumer, afterSeq, limit }) {
      const { rows } = await run(
        sql`SELECT * FROM ${inboxTable(names, names.dead)} WHERE ${ofConsumer(consumer)} AND seq > ${seq(afterSeq ?? '0')}
            ORDER BY seq LIMIT ${limit}`.compile(compiler),
      );
      return rows.map(deadLetter);
    },

    async getDead(run, names, at, lock) {
      const { rows } = await run(
        sql`SELECT * FROM ${inboxTable(names, names.dead)} WHERE seq = ${seq(at)} ${lock ? sql`FOR UPDATE` : sql``}`.compile(
          compiler,
        ),
      );
      return rows[0] === undefined ? null : deadLetter(rows[0]);
    },

    async deleteDead(run, names, at) {
      const { affectedRows } = await run(
        sql`DELETE FROM ${inboxTable(names, names.dead)} WHERE seq = ${seq(at)}`.compile(compiler),
      );
      return affectedRows === 1;
    },
  };
}
