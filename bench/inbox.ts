import { sql, type Kysely } from 'kysely';
import { createInbox, migrateInbox, type Inbox } from '../src/index.js';
import {
  machineFacts,
  median,
  ms,
  progressFor,
  ratio,
  redact,
  serverFacts,
  targets,
  withScratchSchema,
  type Target,
} from './support.js';

/**
 * Inbox benchmark. What processOnce costs a consumer's business transaction, on PostgreSQL and MariaDB/MySQL:
 * the same one-row handler transaction with and without processOnce around it (a new id each time), and the
 * duplicate path (an id already recorded: the handler is skipped, so it is cheaper than the baseline).
 * Transactions run one at a time on a pool, so the figures are latencies, not contention.
 */

const WARMUP = 200;
const ROUNDS = 10;
const PER_ROUND = 1000;

type Kind = 'baseline' | 'processOnce' | 'duplicate';
const KINDS: readonly Kind[] = ['baseline', 'processOnce', 'duplicate'];

interface DbReport {
  target: Target;
  version: string;
  durability: string;
  latencies: Record<Kind, Float64Array>;
  totals: Record<Kind, number>;
  roundRatios: Record<Exclude<Kind, 'baseline'>, number[]>;
  seconds: number;
}

const progress = progressFor('inbox');

export async function benchInbox(): Promise<string> {
  const date = new Date();
  const reports: DbReport[] = [];
  for (const target of targets()) reports.push(await benchTarget(target));
  return render(date, reports);
}

async function benchTarget(target: Target): Promise<DbReport> {
  const started = performance.now();
  progress(`${target.label}: connecting to ${redact(target.url)}`);
  const report = await withScratchSchema(target, { poolSize: 4, progress }, async (db, schema) => {
    await migrateInbox(db, { dialect: target.dialect, schema });
    const inbox = createInbox({ dialect: target.dialect, schema });
    const { version, durability } = await serverFacts(target, db);
    await (
      target.dialect === 'postgres'
        ? sql`CREATE TABLE ${sql.id(schema, 'payments')} (id text PRIMARY KEY, amount numeric(10,2))`
        : sql`CREATE TABLE ${sql.id(schema, 'payments')} (id VARCHAR(64) PRIMARY KEY, amount DECIMAL(10,2)) ENGINE=InnoDB`
    ).execute(db);
    progress(`${target.label}: ${version} in ${schema}`);
    return { target, version, durability, ...(await measure(target, db, schema, inbox)), seconds: 0 };
  });
  report.seconds = (performance.now() - started) / 1000;
  progress(`${target.label}: done in ${report.seconds.toFixed(1)} s`);
  return report;
}

async function measure(target: Target, db: Kysely<any>, schema: string, inbox: Inbox) {
  const payments = sql.id(schema, 'payments');
  let sequence = 0;
  // The handler: one business row, as a payment consumer would write.
  const handler = (trx: Kysely<any>, id: string) => sql`INSERT INTO ${payments} (id, amount) VALUES (${id}, 12.50)`.execute(trx);

  async function transaction(kind: Kind): Promise<number> {
    const id = `m-${sequence++}`;
    // The duplicate path re-delivers an id recorded during warm-up.
    const messageId = kind === 'duplicate' ? `w-${sequence % WARMUP}` : id;
    const start = performance.now();
    await db.transaction().execute(async (trx) => {
      if (kind === 'baseline') await handler(trx, id);
      else await inbox.processOnce(trx, { consumer: 'payments', messageId }, (t) => handler(t, id));
    });
    return performance.now() - start;
  }

  progress(`${target.label}: warm-up, ${WARMUP} of each`);
  for (let i = 0; i < WARMUP; i++) {
    await transaction('baseline');
    await db
      .transaction()
      .execute((trx) => inbox.processOnce(trx, { consumer: 'payments', messageId: `w-${i}` }, (t) => handler(t, `w-${i}`)));
  }
  const latencies = Object.fromEntries(KINDS.map((k) => [k, new Float64Array(ROUNDS * PER_ROUND)])) as Record<Kind, Float64Array>;
  const totals: Record<Kind, number> = { baseline: 0, processOnce: 0, duplicate: 0 };
  const roundRatios = { processOnce: [] as number[], duplicate: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    const roundTotals: Record<Kind, number> = { baseline: 0, processOnce: 0, duplicate: 0 };
    // Interleaved one transaction at a time, rotating who goes first: on a shared machine the noise comes in bursts,
    // and interleaving makes a burst hit every variant alike.
    for (let i = 0; i < PER_ROUND; i++) {
      for (let k = 0; k < KINDS.length; k++) {
        const kind = KINDS[(i + k) % KINDS.length]!;
        const took = await transaction(kind);
        latencies[kind][round * PER_ROUND + i] = took;
        roundTotals[kind] += took;
      }
    }
    for (const kind of KINDS) totals[kind] += roundTotals[kind];
    roundRatios.processOnce.push(roundTotals.processOnce / roundTotals.baseline);
    roundRatios.duplicate.push(roundTotals.duplicate / roundTotals.baseline);
    progress(
      `${target.label}: round ${round + 1}/${ROUNDS}: processOnce/baseline ${ratio(roundRatios.processOnce.at(-1)!)}, ` +
        `duplicate/baseline ${ratio(roundRatios.duplicate.at(-1)!)}`,
    );
  }
  return { latencies, totals, roundRatios };
}

function render(date: Date, reports: readonly DbReport[]): string {
  const lines = [
    '## Inbox',
    '',
    ...machineFacts('npm run bench -- inbox', date),
    ...reports.map((r) => `- ${r.target.label}: ${r.version} (${r.durability})`),
    '',
    `One consumer transaction at a time on a pool: ${WARMUP} warm-up of each, then ${ROUNDS} rounds of ${PER_ROUND} of each ` +
      `variant, interleaved one transaction at a time (order rotated). Baseline: \`db.transaction()\` running the handler alone (one INSERT into \`payments\`). ` +
      `processOnce: the same transaction with \`inbox.processOnce\` around the handler, a new message id each time. ` +
      `Duplicate: processOnce for an id already recorded (the handler is skipped). Ratios divide total time over the same rounds; ` +
      `the range is the lowest and highest per-round ratio; the p50 ratio divides medians, which shrugs off bursts of noise.`,
  ];
  for (const r of reports) {
    const mean = (kind: Kind) => ms(r.totals[kind] / r.latencies[kind].length);
    const p50Ratio = (kind: Kind) => ratio(median(r.latencies[kind]) / median(r.latencies.baseline));
    const cell = (kind: Exclude<Kind, 'baseline'>) =>
      `**${ratio(r.totals[kind] / r.totals.baseline)}** (rounds ${ratio(Math.min(...r.roundRatios[kind]))}–${ratio(Math.max(...r.roundRatios[kind]))})`;
    lines.push(
      '',
      `### ${r.target.label}`,
      '',
      `${r.version} · ${r.durability} · took ${r.seconds.toFixed(1)} s`,
      '',
      '| Measurement | Mean ms | p50 ms | Ratio to baseline (time) | p50 ratio |',
      '|---|---:|---:|---|---:|',
      `| Baseline: handler transaction (1 INSERT) | ${mean('baseline')} | ${ms(median(r.latencies.baseline))} | 1.00 | 1.00 |`,
      `| + processOnce, new id | ${mean('processOnce')} | ${ms(median(r.latencies.processOnce))} | ${cell('processOnce')} | ${p50Ratio('processOnce')} |`,
      `| processOnce, duplicate id (handler skipped) | ${mean('duplicate')} | ${ms(median(r.latencies.duplicate))} | ${cell('duplicate')} | ${p50Ratio('duplicate')} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}
