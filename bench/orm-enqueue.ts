import { sql, type Kysely } from 'kysely';
import { createOutbox, migrate, type DialectName, type TransactionLike } from '../src/index.js';
import { ORM_SUBJECTS } from './orm-subjects.js';
import { ms, progressFor, ratio, targets, withScratchSchema, type Target } from './support.js';

/**
 * Enqueue through each ORM: (ORM transaction inserting one order + enqueue of one keyed message) / (the same ORM
 * transaction alone), next to the same ratio for a Kysely transaction measured in the same rounds; the goal (#14):
 * each ORM's ratio ≤ Kysely's + 0.05. Rounds rotate the four kinds, so drift falls on all alike.
 */
const WARMUP = 100;
const ROUNDS = 6;
const PER_ROUND = 200;
const GOAL_MARGIN = 0.05;

const progress = progressFor('enqueue');

/** What the bench drives: one way of running a business transaction (an ORM's, or Kysely's). */
export interface EnqueueSubject {
  transaction<T>(work: (tx: TransactionLike) => Promise<T>): Promise<T>;
  insertOrder(tx: TransactionLike, id: string): Promise<void>;
  close(): Promise<void>;
}

/** An ORM as the bench opens it (the same fixtures the ORM contract tests use). */
export interface OrmSubject {
  name: string;
  open(dialect: DialectName, url: string, schema: string): Promise<EnqueueSubject>;
}

interface OrmResult {
  orm: string;
  /** Seconds per kind over all rounds. */
  kyselyAlone: number;
  kyselyWith: number;
  ormAlone: number;
  ormWith: number;
  roundRatios: { kysely: number[]; orm: number[] };
  error?: string;
}

export async function benchOrmEnqueue(): Promise<string> {
  const lines: string[] = [];
  for (const target of targets()) {
    const results: OrmResult[] = [];
    for (const subject of ORM_SUBJECTS) {
      progress(`${target.label}: ${subject.name}`);
      results.push(await measure(target, subject).catch((error: unknown) => failed(subject.name, error)));
    }
    lines.push(...render(target, results));
  }
  return [
    '### Enqueue through ORMs',
    '',
    `Per ORM and database: a transaction that inserts one \`orders\` row through the ORM, alone and with \`enqueue\` of one keyed message (the ORM module's wrapper, e.g. \`fromPrisma(tx)\`), against the same pair with a Kysely transaction; ${ROUNDS} rounds of ${PER_ROUND} transactions per kind after ${WARMUP} of warm-up, the four kinds rotated each round, one at a time on the ORM's own pool. The goal (#14): each ORM's ratio ≤ Kysely's + ${GOAL_MARGIN}.`,
    '',
    ...lines,
  ].join('\n');
}

async function measure(target: Target, subject: OrmSubject): Promise<OrmResult> {
  return withScratchSchema(target, { poolSize: 4, progress }, async (db, schema) => {
    await migrate(db, { dialect: target.dialect, schema });
    await sql`CREATE TABLE ${sql.id(schema, 'orders')} (id VARCHAR(64) PRIMARY KEY)`.execute(db);
    const outbox = createOutbox({ dialect: target.dialect, schema });
    const orm = await subject.open(target.dialect, target.url, schema);
    const kysely = kyselySubject(db, schema);
    try {
      type Kind = 'kyselyAlone' | 'kyselyWith' | 'ormAlone' | 'ormWith';
      const kinds: Kind[] = ['kyselyAlone', 'kyselyWith', 'ormAlone', 'ormWith'];
      let n = 0;
      const once = async (kind: Kind) => {
        const on = kind.startsWith('kysely') ? kysely : orm;
        const id = `${kind}-${n++}`;
        await on.transaction(async (tx) => {
          await on.insertOrder(tx, id);
          if (kind.endsWith('With')) await outbox.enqueue(tx, { id, topic: 'orders.created', key: `customer-${n % 100}`, payload: { id } });
        });
      };
      for (const kind of kinds) for (let i = 0; i < WARMUP; i++) await once(kind);
      const seconds: Record<Kind, number> = { kyselyAlone: 0, kyselyWith: 0, ormAlone: 0, ormWith: 0 };
      const roundRatios = { kysely: [] as number[], orm: [] as number[] };
      for (let round = 0; round < ROUNDS; round++) {
        const order = kinds.map((_, i) => kinds[(i + round) % kinds.length]!);
        const took: Record<Kind, number> = { kyselyAlone: 0, kyselyWith: 0, ormAlone: 0, ormWith: 0 };
        for (const kind of order) {
          const began = performance.now();
          for (let i = 0; i < PER_ROUND; i++) await once(kind);
          took[kind] = (performance.now() - began) / 1000;
          seconds[kind] += took[kind];
        }
        roundRatios.kysely.push(took.kyselyWith / took.kyselyAlone);
        roundRatios.orm.push(took.ormWith / took.ormAlone);
      }
      return { orm: subject.name, ...seconds, roundRatios };
    } finally {
      await orm.close();
    }
  });
}

function kyselySubject(db: Kysely<any>, schema: string): EnqueueSubject {
  return {
    transaction: (work) => db.transaction().execute((trx) => work(trx)),
    insertOrder: async (tx, id) => {
      await sql`INSERT INTO ${sql.id(schema, 'orders')} (id) VALUES (${id})`.execute(tx as Kysely<any>);
    },
    close: async () => undefined,
  };
}

function failed(orm: string, error: unknown): OrmResult {
  return { orm, kyselyAlone: 0, kyselyWith: 0, ormAlone: 0, ormWith: 0, roundRatios: { kysely: [], orm: [] }, error: String(error) };
}

function render(target: Target, results: readonly OrmResult[]): string[] {
  const spread = (values: readonly number[]) =>
    values.length === 0 ? '—' : `${ratio(Math.min(...values))}–${ratio(Math.max(...values))}`;
  const rows = results.map((r) => {
    if (r.error !== undefined) return `| ${r.orm} | — | — | — | **failed**: ${r.error.split('\n')[0]} |`;
    const perTx = (s: number) => ms((s * 1000) / (ROUNDS * PER_ROUND));
    const orm = r.ormWith / r.ormAlone;
    const kysely = r.kyselyWith / r.kyselyAlone;
    const verdict = orm <= kysely + GOAL_MARGIN ? 'met' : '**missed**';
    return `| ${r.orm} | ${perTx(r.ormAlone)} → ${perTx(r.ormWith)} | **${ratio(orm)}** (${spread(r.roundRatios.orm)}) | ${ratio(kysely)} (${spread(r.roundRatios.kysely)}) | ${verdict} |`;
  });
  return [
    `#### ${target.label}`,
    '',
    '| ORM | ms per transaction, alone → with enqueue | ORM ratio (rounds) | Kysely ratio, same rounds | ≤ Kysely + 0.05 |',
    '|---|---:|---:|---:|---|',
    ...rows,
    '',
  ];
}
