import { sql } from 'kysely';
import type { SqlExecutor } from '../executor.js';
import type { TableNames } from '../identifiers.js';
import { compiler, qualified } from './compiler.js';

/** Takes `n` off each key's count of unsent messages (the caller holds the keys' stripe locks). */
export async function decrementKeyCounts(run: SqlExecutor, names: TableNames, counts: Map<string, number>): Promise<void> {
  if (counts.size === 0) return;
  const keys = [...counts.keys()];
  const cases = keys.map((key) => sql`WHEN ${Buffer.from(key)} THEN ${counts.get(key)}`);
  await run(
    sql`
      UPDATE ${qualified(names, names.keys)} SET pending = pending - CASE msg_key ${sql.join(cases, sql` `)} END
      WHERE msg_key IN (${sql.join(keys.map((key) => Buffer.from(key)))})`.compile(compiler),
  );
}
