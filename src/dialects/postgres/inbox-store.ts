import { sql } from 'kysely';
import type { InboxDeadLetter } from '../../dedupe/message.js';
import { inboxDeadLetterQueries, inboxTable } from '../inbox-dead-letters.js';
import type { InboxStore } from '../inbox-store.js';
import { compiler } from './compiler.js';

function deadLetter(row: Record<string, unknown>): InboxDeadLetter {
  return {
    seq: String(row.seq),
    consumer: row.consumer as string,
    messageId: (row.message_id as string | null) ?? null,
    source: row.source as string,
    destination: row.destination as string,
    topic: (row.topic as string | null) ?? null,
    payload: row.payload as Buffer,
    contentType: (row.content_type as string | null) ?? null,
    headers: row.headers as Record<string, string>,
    error: row.last_error as string,
    attempts: Number(row.attempts),
    deadAt: row.dead_at as Date,
  };
}

export const postgresInboxStore: InboxStore = {
  async record(run, names, consumer, messageId) {
    // ON CONFLICT DO NOTHING waits for a concurrent uncommitted insert of the same key: if that transaction
    // commits this one inserts nothing (a duplicate), if it rolls back this one inserts. No error either way.
    const { rows } = await run(
      sql`INSERT INTO ${inboxTable(names, names.table)} (consumer, message_id) VALUES (${consumer}, ${messageId})
          ON CONFLICT (consumer, message_id) DO NOTHING RETURNING 1 AS recorded`.compile(compiler),
    );
    return rows.length === 1;
  },

  async cleanup(run, names, olderThanMs, limit) {
    const inbox = inboxTable(names, names.table);
    // SKIP LOCKED: a row some transaction is touching right now is left for the next round.
    const { affectedRows } = await run(
      sql`DELETE FROM ${inbox} WHERE (consumer, message_id) IN (
            SELECT consumer, message_id FROM ${inbox}
            WHERE processed_at < statement_timestamp() - ${olderThanMs} * interval '1 millisecond'
            ORDER BY processed_at LIMIT ${limit} FOR UPDATE SKIP LOCKED)`.compile(compiler),
    );
    return affectedRows;
  },

  async bury(run, names, letter) {
    const dead = inboxTable(names, names.dead);
    await run(
      sql`INSERT INTO ${dead} AS d (consumer, message_id, source, destination, topic, payload, content_type, headers, last_error, attempts)
          VALUES (${letter.consumer}, ${letter.messageId}, ${letter.source}, ${letter.destination}, ${letter.topic},
                  ${letter.payload}, ${letter.contentType}, ${JSON.stringify(letter.headers)}::jsonb, ${letter.error}, ${letter.attempts})
          ON CONFLICT (consumer, message_id) DO UPDATE SET
            source = excluded.source, destination = excluded.destination, topic = excluded.topic,
            payload = excluded.payload, content_type = excluded.content_type, headers = excluded.headers, last_error = excluded.last_error,
            attempts = excluded.attempts, dead_at = statement_timestamp()`.compile(compiler),
    );
  },

  ...inboxDeadLetterQueries({
    compiler,
    seq: (seq) => sql`${seq}::bigint`,
    ofConsumer: (consumer) => sql`(${consumer}::text IS NULL OR consumer = ${consumer})`,
    deadLetter,
  }),
};
