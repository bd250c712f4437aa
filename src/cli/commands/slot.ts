import {
  assertLogicalDecoding,
  createPublications,
  dropSlot,
  ensureSlot,
  LogicalDecodingUnavailableError,
  slotStatus,
  type SlotStatus,
} from '../../relay/logical/slots.js';
import type { LoadedConfig } from '../config.js';
import type { Selection } from '../context.js';
import { assertTableExists, isMissingTable } from '../databases.js';
import { CliError, EXIT } from '../errors.js';
import { formatBytes, table } from '../format.js';
import { withLogicalTargets, type LogicalTarget } from '../logical-targets.js';

export interface SlotCommandOptions extends Selection {
  json?: boolean;
  out: (line: string) => void;
}

const selectionOf = (options: SlotCommandOptions): Selection => ({
  ...(options.database === undefined ? {} : { database: options.database }),
  ...(options.table === undefined ? {} : { table: options.table }),
});

/** PostgreSQL's "object in use": the slot is active for another process. */
const OBJECT_IN_USE = '55006';

/**
 * Creates what the logical relays of the selected tables stream from: the publication(s) of the table's inserts and
 * the replication slot(s), each unless it exists. A relay creates its slot on first start anyway; creating it ahead
 * makes the server keep every change from now on, before any relay runs.
 */
export async function slotCreateCommand(loaded: LoadedConfig, options: SlotCommandOptions): Promise<void> {
  await withLogicalTargets(loaded, selectionOf(options), async (targets) => {
    for (const target of targets) {
      await assertLogicalDecoding(target.database.db).catch((error: unknown) => {
        if (error instanceof LogicalDecodingUnavailableError) {
          throw new CliError(`${target.label}: ${error.message}`, EXIT.failure, { cause: error });
        }
        throw error;
      });
      await assertTableExists(target.database, target.table);
      const published = await createPublications(target.database.db, target.names, target.logical);
      const said = target.logical.publications.map((name) => `publication ${name} ${published.includes(name) ? 'created' : 'exists'}`);
      for (const slot of target.logical.slots) {
        const created = await ensureSlot(target.database.db, slot, target.names).catch((error: unknown) => {
          if (error instanceof LogicalDecodingUnavailableError) throw new CliError(`${target.label}: ${error.message}`, EXIT.failure);
          throw notMigrated(target, error);
        });
        said.push(`slot ${slot} ${created ? 'created' : 'exists'}`);
      }
      options.out(`${target.label}: ${said.join(', ')}`);
    }
  });
}

/**
 * Drops the replication slot(s) of the selected tables, so the server stops keeping WAL for them. Refuses, dropping
 * nothing, while a relay streams from any of them: stop the relays first. Unsent rows are not lost: a relay started
 * later creates the slot again and reads them from the table. Publications are kept (they hold no WAL).
 */
export async function slotDropCommand(loaded: LoadedConfig, options: SlotCommandOptions): Promise<void> {
  await withLogicalTargets(loaded, selectionOf(options), async (targets) => {
    const slots = await statuses(targets);
    const active = slots.filter(({ status }) => status.active);
    if (active.length > 0) throw inUse(active.map(({ status }) => status));
    for (const { target, status } of slots) {
      const dropped = await dropSlot(target.database.db, status.slot, target.names).catch((error: unknown) => {
        // A relay took the slot between the check and the drop.
        if ((error as { code?: unknown } | null)?.code === OBJECT_IN_USE) throw inUse([status]);
        throw notMigrated(target, error);
      });
      options.out(`${target.label}: slot ${status.slot} ${dropped ? 'dropped' : 'does not exist'}`);
    }
  });
}

/** The table of slot records (`<table>_slots`) comes with the outbox migrations: a missing one means migrate. */
function notMigrated(target: LogicalTarget, error: unknown): unknown {
  if (!isMissingTable(error)) return error;
  return new CliError(
    `${target.label}: ${(error as Error).message}. Run \`txoutbox migrate --config <file>\` first.`,
    EXIT.schema,
    { cause: error },
  );
}

function inUse(active: SlotStatus[]): CliError {
  const which = active.map((s) => (s.activePid === null ? s.slot : `${s.slot} (server process ${s.activePid})`)).join(', ');
  return new CliError(
    `Not dropping: a relay streams from ${which}. Stop the relays of these tables first, then run \`txoutbox slot drop\` ` +
      'again. No slot was dropped.',
    EXIT.slotActive,
  );
}

/** Per slot: whether it exists and a relay streams from it, its confirmed position, the WAL it keeps and its lag. */
export async function slotStatusCommand(loaded: LoadedConfig, options: SlotCommandOptions): Promise<void> {
  await withLogicalTargets(loaded, selectionOf(options), async (targets) => {
    const report = (await statuses(targets)).map(({ target, status }) => ({
      ...target.labels,
      slot: status.slot,
      exists: status.exists,
      active: status.active,
      activePid: status.activePid,
      confirmedFlushLsn: status.confirmedFlushLsn,
      retainedWalBytes: status.retainedBytes,
      lagBytes: status.lagBytes,
      walStatus: status.walStatus,
    }));
    if (options.json) {
      options.out(JSON.stringify({ slots: report }, null, 2));
      return;
    }
    options.out(
      table(
        ['DATABASE', 'TABLE', 'SLOT', 'EXISTS', 'ACTIVE', 'CONFIRMED', 'RETAINED WAL', 'LAG', 'WAL STATUS'],
        report.map((r) => [
          r.database,
          r.table,
          r.slot,
          r.exists ? 'yes' : 'no',
          r.active ? `yes (pid ${r.activePid})` : 'no',
          r.confirmedFlushLsn ?? '-',
          formatBytes(r.retainedWalBytes),
          formatBytes(r.lagBytes),
          r.walStatus ?? '-',
        ]),
      ),
    );
    if (report.some((r) => !r.exists)) {
      options.out('\nA missing slot is created by `txoutbox slot create`, or by the first relay that starts.');
    }
    if (report.some((r) => r.walStatus === 'lost')) {
      options.out(
        '\nA lost slot passed max_slot_wal_keep_size: drop it and let a relay create it again (unsent rows are read from the table).',
      );
    }
  });
}

async function statuses(targets: readonly LogicalTarget[]) {
  const all: { target: LogicalTarget; status: SlotStatus }[] = [];
  for (const target of targets) {
    for (const slot of target.logical.slots) all.push({ target, status: await slotStatus(target.database.db, slot) });
  }
  return all;
}
