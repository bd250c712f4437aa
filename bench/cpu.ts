import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { sql, type Kysely } from 'kysely';
import type { Target } from './support.js';

/**
 * CPU accounting from /proc: on a small machine the bench process, the database and the broker share the same
 * cores, so where the CPU went explains a throughput as much as the wall clock does.
 */

export const CPU_GROUPS = ['bench', 'database', 'broker', 'other'] as const;
export type CpuGroup = (typeof CPU_GROUPS)[number];
export type CpuTimes = Record<CpuGroup, number>;
/** Linux's USER_HZ: /proc reports CPU time in these ticks. */
const TICKS_PER_SECOND = 100;
const BROKER_COMMANDS = new Set(['beam.smp', 'erl_child_setup', 'inet_gethost', 'epmd', 'nats-server']);
/** Broker processes a bench started itself, whose command name (node, for the SQS emulator) says nothing. */
export const BROKER_PIDS = new Set<number>();
const DATABASE_COMMANDS = new Set(['postgres', 'mariadbd', 'mysqld']);

/** CPU time used so far (ms, user + system, all threads) per live process, and by the whole machine. */
export interface CpuSnapshot {
  processes: Map<number, { group: CpuGroup; ms: number }>;
  /** Busy time of all cores together, from /proc/stat: it includes processes that have exited since. */
  machineMs: number;
}

export function cpuSnapshot(): CpuSnapshot | null {
  let entries: string[];
  let machineMs: number;
  try {
    entries = readdirSync('/proc');
    // cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
    machineMs =
      ((fields.reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0) -
        (fields[3] ?? 0) -
        (fields[4] ?? 0) -
        (fields[8] ?? 0) -
        (fields[9] ?? 0)) *
        1000) /
      TICKS_PER_SECOND;
  } catch {
    return null;
  }
  const processes = new Map<number, { group: CpuGroup; ms: number }>();
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // It exited while we looked.
    }
    const close = stat.lastIndexOf(')');
    const command = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    // Fields 14 and 15 of stat (utime, stime); fields[0] is field 3.
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (!Number.isFinite(ticks)) continue;
    const pid = Number(entry);
    const group: CpuGroup =
      pid === process.pid
        ? 'bench'
        : DATABASE_COMMANDS.has(command)
          ? 'database'
          : BROKER_COMMANDS.has(command) || BROKER_PIDS.has(pid)
            ? 'broker'
            : 'other';
    processes.set(pid, { group, ms: (ticks * 1000) / TICKS_PER_SECOND });
  }
  return { processes, machineMs };
}

export interface CpuSpan {
  before: CpuSnapshot | null;
  after: CpuSnapshot | null;
}

/** Names the relay pools' connections (PostgreSQL application_name), so their backends can be told from other clients'. */
export const RELAY_APPLICATION = `txoutbox-bench-relay-${randomBytes(3).toString('hex')}`;

/** The target's URL with RELAY_APPLICATION as application_name (PostgreSQL; MySQL has no such thing). */
export function relayUrl(target: Target): string {
  if (target.dialect !== 'postgres') return target.url;
  const url = new URL(target.url);
  url.searchParams.set('application_name', RELAY_APPLICATION);
  return url.toString();
}

/**
 * Database processes that work for this bench. PostgreSQL: the relay pools' backends and the auxiliary processes
 * (WAL writer, checkpointer, autovacuum...). MariaDB/MySQL is one process whose threads serve every client: 'all'.
 */
export async function ownDatabasePids(target: Target, db: Kysely<any>): Promise<Set<number> | 'all'> {
  if (target.dialect !== 'postgres') return 'all';
  try {
    const { rows } = await sql<{ pid: number }>`
      SELECT pid FROM pg_stat_activity WHERE backend_type <> 'client backend' OR application_name = ${RELAY_APPLICATION}`.execute(
      db,
    );
    return new Set(rows.map((row) => Number(row.pid)));
  } catch {
    return new Set();
  }
}

/**
 * CPU ms each group used between two snapshots: per process, what it used since the first (all of it when it started
 * in between). The database counts only `ownDb` (other clients' PostgreSQL backends are noise); a process that exited
 * in between is not seen, so "other" is the machine's busy time minus the three groups.
 */
export function cpuBetween({ before, after }: CpuSpan, ownDb: ReadonlySet<number> | 'all'): CpuTimes | null {
  if (before === null || after === null) return null;
  const times: CpuTimes = { bench: 0, database: 0, broker: 0, other: 0 };
  for (const [pid, { group, ms: used }] of after.processes) {
    if (group === 'other' || (group === 'database' && ownDb !== 'all' && !ownDb.has(pid))) continue;
    const earlier = before.processes.get(pid);
    times[group] += Math.max(0, used - (earlier?.group === group ? earlier.ms : 0));
  }
  times.other = Math.max(0, after.machineMs - before.machineMs - times.bench - times.database - times.broker);
  return times;
}
