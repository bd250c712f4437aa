import type { HeadProblem } from '../../dialects/admin.js';
import type { LoadedConfig } from '../config.js';
import { withTargets, type Selection } from '../context.js';
import { table } from '../format.js';

export interface DoctorCommandOptions extends Selection {
  dryRun?: boolean;
  json?: boolean;
  out: (line: string) => void;
}

const describe = (problem: HeadProblem) =>
  problem.kind === 'no-head'
    ? `no head: ${problem.waiting} message(s) wait and none may go`
    : `${problem.heads} heads: its order is at risk`;

/**
 * Checks every configured outbox table for keys whose head bookkeeping is off, and repairs them (one head each,
 * under the relays' key locks) unless --dry-run. Safe while relays run. txoutbox's own statements never leave such
 * a key; a hand-edited row, a restored backup or an older relay can.
 */
export async function doctorCommand(loaded: LoadedConfig, options: DoctorCommandOptions): Promise<void> {
  await withTargets(loaded, options, async (targets) => {
    const report = [];
    for (const target of targets) {
      const problems = await target.admin.headProblems();
      const repaired = options.dryRun || problems.length === 0 ? 0 : await target.admin.repairHeads(problems.map((p) => p.key));
      report.push({ database: target.labels.database, table: target.labels.table, problems, repaired });
    }
    if (options.json) {
      options.out(JSON.stringify({ dryRun: options.dryRun === true, tables: report }, null, 2));
      return;
    }
    const rows = report.flatMap((r) => r.problems.map((p) => [r.database, r.table, JSON.stringify(p.key), describe(p)]));
    if (rows.length === 0) {
      options.out('Every key is in order: each key with unsent messages has exactly one head.');
      return;
    }
    options.out(table(['DATABASE', 'TABLE', 'KEY', 'PROBLEM'], rows));
    options.out(
      options.dryRun
        ? `\n${rows.length} key(s) need repair; --dry-run changed nothing. Run again without it to repair them.`
        : `\nRepaired ${rows.length} key(s): ${report.reduce((n, r) => n + r.repaired, 0)} new head(s); running relays publish them in order.`,
    );
  });
}
