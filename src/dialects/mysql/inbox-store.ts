import { sql } from 'kysely';
import type { InboxDeadLetter } from '../../dedupe/message.js';
import { inboxDeadLetterQueries, inboxTable } from '../inbox-dead-letters.js';
import type { InboxStore } from '../inbox-store.js';
import { compiler } from './compiler.js';

const ER_DUP_ENTRY = 1062;

const text = (value: unknown): string | null =>
  value === null || value === undefined ? null : Buffer.isBuffer(value) ? value.toString('utf8') : String(value);

function deadLetter(row: Record<string, unknown>): InboxDeadLetter {
  const headers = typeof row.headers === 'string' ? (JSON.parse(row.headers) as unknown) : row.headers;
  return {
    seq: String(row.seq),
    consumer: text(row.consumer)!,
    messageId: text(row.message_id),
    source: text(row.source)!,
    destination: text(row.destination)!,
    topic: text(row.topic),
    payload: row.payload as Buffer,
    contentType: text(row.content_type),
    headers: headers as Record<string, string>,
    error: text(row.last_error)!,
    attempts: Number(row.attempts),
    deadAt: row.dead_at as Date,
  };
}

export const mysqlInboxStore: InboxStore = {
  async record(run, names, consumer, messageId) {
    // A plain INSERT, not INSERT IGNORE (which would also turn other errors into warnings). InnoDB's duplicate
    // check waits for a concurrent uncommitted insert of the key: after its commit this fails with ER_DUP_ENTRY,
    // which rolls back only this statement, so the caller's transaction goes on.
    try {
      await run(
        sql`INSERT INTO ${inboxTable(names, names.table)} (consumer, message_id, processed_at)
            VALUES (${Buffer.from(consumer)}, ${Buffer.from(messageId)}, UTC_TIMESTAMP(6))`.compile(compiler),
      );
      return true;
    } catch (error) {
      if ((error as { errno?: unknown } | null)?.errno === ER_DUP_ENTRY) return false;
      throw error;
    }
  },

  async cleanup(run, names, olderThanMs, limit) {
    const { affectedRows } = await run(
      sql`DELETE FROM ${inboxTable(names, names.table)}
          WHERE processed_at < UTC_TIMESTAMP(6) - INTERVAL ${olderThanMs * 1000} MICROSECOND
          ORDER BY processed_at LIMIT ${limit}`.compile(compiler),
    );
    return affectedRows;
  },

  async bury(run, names, letter) {
    await run(
      sql`INSERT INTO ${inboxTable(names, names.dead)}
            (consumer, message_id, source, destination, topic, payload, content_type, headers, last_error, attempts, dead_at)
          VALUES (${Buffer.from(letter.consumer)}, ${letter.messageId === null ? null : Buffer.from(letter.messageId)},
                  ${letter.source}, ${letter.destination}, ${letter.topic}, ${letter.payload},
                  ${letter.contentType}, ${JSON.stringify(letter.headers)}, ${letter.error}, ${letter.attempts}, UTC_TIMESTAMP(6))
          ON DUPLICATE KEY UPDATE
            source = VALUES(source), destination = VALUES(destination), topic = VALUES(topic), payload = VALUES(payload), content_type = VALUES(content_type),
            headers = VALUES(headers), last_error = VALUES(last_error), attempts = VALUES(attempts),
            dead_at = VALUES(dead_at)`.compile(compiler),
    );
  },

  ...inboxDeadLetterQueries({
    compiler,
    seq: (seq) => sql`${seq}`,
    ofConsumer: (consumer) => (consumer === null ? sql`1 = 1` : sql`consumer = ${Buffer.from(consumer)}`),
    deadLetter,
  }),
};
