import type { PlannedMessage, BatchPlan } from '../outbox/batch.js';
import type { DialectName } from './dialect-name.js';
import type { SqlExecutor } from './executor.js';
import type { TableNames } from './identifiers.js';

/** What differs between the databases, behind one interface; `outbox`, `relay` and `dedupe` use it. */
export interface Dialect {
  readonly name: DialectName;
  /**
   * Writes a planned batch inside the caller's transaction and returns the ids actually written (the others were
   * duplicates of committed or concurrently committing messages). Never aborts the caller's transaction on a
   * duplicate id.
   */
  enqueue(run: SqlExecutor, names: TableNames, plan: BatchPlan): Promise<Set<string>>;
}

export type { PlannedMessage };
