import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Kysely } from 'kysely';
import { connect, count, machineFacts, median, progressFor, ratio, targets, type Target } from './support.js';

/**
 * This tree's relay against a variant of it, in the same run: this tree checked out into a temporary worktree with
 * `BENCH_BASE_PATHS` (comma-separated; default both dialects' heads.ts) taken from `BENCH_BASE` (a git ref; default
 * 9af493b^, before the late-commit fix of #23). The two relays drain the same 20k backlog (1,000 keys, 10 %
 * keyless, in-memory broker, batchSize 100, concurrency 2) in alternating rounds, on each database. The report
 * gives each side's median and their ratio: this machine is noisy, a ratio of neighbours is not.
 */

const BASE = process.env.BENCH_BASE ?? '9af493b^';
const BASE_PATHS = (process.env.BENCH_BASE_PATHS ?? 'src/dialects/mysql/heads.ts,src/dialects/postgres/heads.ts').split(',');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const MESSAGES = 20_000;
const KEYS = 1000;
const progress = progressFor('relay-versions');

interface Library {
  migrate(db: Kysely<any>, options: object): Promise<unknown>;
  createOutbox(options: object): { enqueue(trx: unknown, messages: object[]): Promise<unknown> };
  createRelay(options: object): { start(): unknown; stop(): Promise<void> };
  MemoryBroker: new () => { accepted: unknown[] };
}

const message = (n: number) => {
  const key = n % 10 === 9 ? null : `customer-${(n - Math.floor(n / 10)) % KEYS}`;
  const payload = { n, orderId: `order-${n}`, note: 'x'.repeat(150) };
  return key === null ? { topic: 'orders.created', payload } : { topic: 'orders.created', key, payload };
};

async function drain(target: Target, lib: Library, schema: string): Promise<number> {
  const admin = connect(target, { poolSize: 2 });
  const db = connect(target, { poolSize: 10 });
  try {
    if (target.dialect === 'mysql') await sql`CREATE DATABASE ${sql.id(schema)}`.execute(admin);
    else await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(admin);
    await lib.migrate(admin, { dialect: target.dialect, schema, table: 'tput' });
    const outbox = lib.createOutbox({ dialect: target.dialect, schema, table: 'tput' });
    for (let start = 0; start < MESSAGES; start += 1000) {
      const batch = Array.from({ length: 1000 }, (_, i) => message(start + i));
      await admin.transaction().execute((trx) => outbox.enqueue(trx, batch));
    }
    await (target.dialect === 'mysql' ? sql`ANALYZE TABLE ${sql.id(schema, 'tput')}` : sql`ANALYZE ${sql.id(schema, 'tput')}`).execute(admin);
    const broker = new lib.MemoryBroker();
    const relay = lib.createRelay({ db, dialect: target.dialect, schema, table: 'tput', broker, batchSize: 100, concurrency: 2 });
    const began = performance.now();
    relay.start();
    while (broker.accepted.length < MESSAGES) await new Promise((resolve) => setTimeout(resolve, 1));
    const ms = performance.now() - began;
    await relay.stop();
    return MESSAGES / (ms / 1000);
  } finally {
    await (target.dialect === 'mysql' ? sql`DROP DATABASE IF EXISTS ${sql.id(schema)}` : sql`DROP SCHEMA IF EXISTS ${sql.id(schema)} CASCADE`)
      .execute(admin)
      .catch(() => undefined);
    await db.destroy();
    await admin.destroy();
  }
}

export async function benchRelayVersions(): Promise<string> {
  const root = new URL('..', import.meta.url).pathname;
  const dir = mkdtempSync(join(tmpdir(), 'txoutbox-base-'));
  const rev = execFileSync('git', ['-C', root, 'rev-parse', '--short', BASE], { encoding: 'utf8' }).trim();
  progress(`this tree, with ${BASE_PATHS.join(', ')} of ${BASE} (${rev}), in ${dir}`);
  execFileSync('git', ['-C', root, 'worktree', 'add', '--detach', dir, 'HEAD'], { stdio: 'ignore' });
  try {
    execFileSync('git', ['-C', dir, 'checkout', rev, '--', ...BASE_PATHS], { stdio: 'ignore' });
    if (!existsSync(join(dir, 'node_modules'))) symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    const sides = [
      { name: 'this tree', lib: (await import(join(root, 'src/index.ts'))) as Library },
      { name: `with ${BASE} (${rev})'s ${BASE_PATHS.join(', ')}`, lib: (await import(join(dir, 'src/index.ts'))) as Library },
    ];
    const lines: string[] = [];
    for (const target of targets()) {
      const rates = sides.map(() => [] as number[]);
      for (let round = 0; round < ROUNDS; round++) {
        for (const [index, side] of sides.entries()) {
          const rate = await drain(target, side.lib, `txo_versions_${round}_${index}_${process.pid}`);
          rates[index]!.push(rate);
          progress(`${target.label}: round ${round + 1}/${ROUNDS}: ${side.name} ${count(rate)} msg/s`);
        }
      }
      const [mine, base] = rates.map((values) => median(Float64Array.from(values)));
      lines.push(
        `| ${target.label} | ${count(mine!)} | ${count(base!)} | **${ratio(mine! / base!)}** | ${rates[0]!.map((r, i) => ratio(r / rates[1]![i]!)).join(', ')} |`,
      );
    }
    return [
      `### Relay throughput: this tree / this tree with ${BASE_PATHS.join(', ')} of ${BASE} (${rev}), same run`,
      '',
      ...machineFacts('npm run bench -- relay-versions', new Date()),
      '',
      `${count(MESSAGES)}-message backlog, ${KEYS} keys (10 % keyless), in-memory broker, batchSize 100, concurrency 2; ${ROUNDS} alternating rounds, medians.`,
      '',
      '| database | this tree msg/s | base msg/s | ratio | per round |',
      '| --- | --- | --- | --- | --- |',
      ...lines,
    ].join('\n');
  } finally {
    execFileSync('git', ['-C', root, 'worktree', 'remove', '--force', dir], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  }
}
