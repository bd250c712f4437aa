import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql, type Kysely } from 'kysely';
import { parseConfig } from '../src/cli/config.js';
import { openDashboard, type Dashboard } from '../src/cli/dashboard/dashboard.js';
import { migrate, migrateInbox } from '../src/index.js';
import {
  analyze,
  count,
  machineFacts,
  median,
  ms,
  percentile,
  progressFor,
  ratio,
  redact,
  serverFacts,
  settle,
  targets,
  withScratchSchema,
  type Target,
} from './support.js';

/**
 * Dashboard benchmark. On PostgreSQL and MariaDB/MySQL, an outbox table holding 1,000,000 pending messages (100,000
 * keys, ten messages each) and 10,000 dead letters (5,000 of them heads that block a key with messages waiting),
 * next to a baseline table in the same run. For each page: the time from sending the GET to the last byte of its
 * body (time to first render: the pages are server-rendered, nothing is fetched after), first request and then
 * the median and p95 of repeated requests, on the full table against the same page on the empty one. The overview
 * renders from the sampler's last reading, so the reading round itself (every 5 s, in the background, on a pool of
 * its own) is timed too: it is how old the overview's figures can be.
 */

// BENCH_DASHBOARD_PENDING: a smaller table, to try the bench out (the figures reported use the default).
const PENDING = Number(process.env.BENCH_DASHBOARD_PENDING ?? 1_000_000);
const DEAD = 10_000;
const KEYS = 100_000;
const BLOCKING = 5_000;
const REPEATS = 15;
const WARMUP = 2;

const progress = progressFor('dashboard');

interface PageTiming {
  page: string;
  firstMs: number;
  fullMs: Float64Array;
  emptyMs: Float64Array;
}

interface DbReport {
  target: Target;
  version: string;
  durability: string;
  fillSeconds: number;
  /** What the full table held, counted after the fill. */
  rows: string;
  roundMs: { full: number; empty: number };
  selectOneMs: number;
  pages: PageTiming[];
}

export async function benchDashboard(): Promise<string> {
  const date = new Date();
  const reports: DbReport[] = [];
  for (const target of targets()) reports.push(await benchTarget(target));
  return render(date, reports);
}

/** Rows 0 .. n-1 as `n`: a recursive CTE of 1000 digits crossed with itself (MySQL 8 and MariaDB have both). */
const mysqlNumbers = sql`WITH RECURSIVE d (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 999)
  SELECT a.n * 1000 + b.n AS n FROM d AS a CROSS JOIN d AS b`;

/**
 * Dead letters `dead-<first>` on (seqs first), then pending messages; the keys of dead letters below 5,000 have
 * messages waiting behind them.
 */
async function fill(
  target: Target,
  db: Kysely<any>,
  schema: string,
  { pending, dead, first }: { pending: number; dead: number; first: number },
): Promise<void> {
  const t = sql.id(schema, 'txoutbox');
  const payload = `'{"orderId":"', n, '","customer":"c-', n % 977, '","total":', n % 1000, '.50,"items":[{"sku":"sku-', n % 313, '","qty":1}]}'`;
  if (target.dialect === 'postgres') {
    await sql`INSERT INTO ${t} (id, topic, msg_key, payload, content_type, headers, state, ready, attempts, next_attempt_at, last_error, created_at)
      SELECT 'dead-' || n, 'orders.' || (n % 10), CASE WHEN n < ${BLOCKING} THEN 'key-' || n END,
        convert_to(${sql.raw(`concat(${payload})`)}, 'UTF8'), 'application/json', '{}', 'dead', n < ${BLOCKING}, 10,
        now(), 'publish failed: timeout after 10000 ms (attempt 10) ' || (CASE WHEN n % 2 = 0 THEN 'broker unreachable' ELSE 'NO_ROUTE' END),
        now() - (n % 3600) * interval '1 second'
      FROM generate_series(${first}::int, ${first + dead - 1}::int) AS n`.execute(db);
    if (pending === 0) return;
    await sql`INSERT INTO ${t} (id, topic, msg_key, payload, content_type, headers, state, ready, attempts, next_attempt_at, created_at)
      SELECT 'pending-' || n, 'orders.' || (n % 10), 'key-' || (n % ${KEYS}),
        convert_to(${sql.raw(`concat(${payload})`)}, 'UTF8'), 'application/json', '{}', 'pending',
        n < ${KEYS} AND n >= ${BLOCKING}, 0, now(), now() - (n % 3600) * interval '1 second'
      FROM generate_series(0, ${pending - 1}::int) AS n`.execute(db);
    return;
  }
  await sql`INSERT INTO ${t} (id, topic, msg_key, payload, content_type, headers, state, ready, attempts, next_attempt_at, last_error, created_at)
    SELECT CONCAT('dead-', n), CONCAT('orders.', n % 10), CASE WHEN n < ${BLOCKING} THEN CONCAT('key-', n) END,
      ${sql.raw(`CONCAT(${payload})`)}, 'application/json', '{}', 'dead', n < ${BLOCKING}, 10, UTC_TIMESTAMP(6),
      CONCAT('publish failed: timeout after 10000 ms (attempt 10) ', CASE WHEN n % 2 = 0 THEN 'broker unreachable' ELSE 'NO_ROUTE' END),
      UTC_TIMESTAMP(6) - INTERVAL (n % 3600) SECOND
    FROM (${mysqlNumbers}) AS numbers WHERE n >= ${first} AND n < ${first + dead} ORDER BY n`.execute(db);
  // In chunks of 100,000: one statement of a million rows would hold InnoDB's undo log for the whole load.
  for (let from = 0; from < pending; from += 100_000) {
    await sql`INSERT INTO ${t} (id, topic, msg_key, payload, content_type, headers, state, ready, attempts, next_attempt_at, created_at)
      SELECT CONCAT('pending-', n), CONCAT('orders.', n % 10), CONCAT('key-', n % ${KEYS}),
        ${sql.raw(`CONCAT(${payload})`)}, 'application/json', '{}', 'pending', n < ${KEYS} AND n >= ${BLOCKING}, 0,
        UTC_TIMESTAMP(6), UTC_TIMESTAMP(6) - INTERVAL (n % 3600) SECOND
      FROM (SELECT numbers.n + ${from} AS n FROM (${mysqlNumbers}) AS numbers WHERE numbers.n < 100000) AS chunk ORDER BY n`.execute(
      db,
    );
  }
}

/** GET until the last byte of the body. */
async function timeGet(url: string): Promise<number> {
  const started = performance.now();
  const response = await fetch(url);
  const body = await response.text();
  const elapsed = performance.now() - started;
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status} ${body.slice(0, 300)}`);
  return elapsed;
}

async function serve(dashboard: Dashboard): Promise<{ base: string; server: Server }> {
  const server = createServer((request, response) => {
    if (!dashboard.handle(request, response)) response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function openOn(target: Target, schema: string) {
  const loaded = parseConfig(
    {
      databases: [
        { name: 'bench', dialect: target.dialect, url: target.url, schema, tables: [{ table: 'txoutbox' }], inbox: {} },
      ],
      brokers: { m: { type: 'memory' } },
    },
    process.env,
  );
  // A sampling interval longer than the run: only the rounds timed below read the tables. A token, for the
  // confirmation page (a GET; nothing is written).
  const dashboard = await openDashboard(loaded, {
    host: '127.0.0.1',
    token: 'bench-token-0123456789',
    sampleIntervalMs: 3_600_000,
  });
  return { dashboard, table: `bench/${schema}.txoutbox`, ...(await serve(dashboard)) };
}

async function benchTarget(target: Target): Promise<DbReport> {
  progress(`${target.label}: connecting to ${redact(target.url)}`);
  return withScratchSchema(target, { poolSize: 2, progress }, async (db, fullSchema) =>
    withScratchSchema(target, { poolSize: 1, progress }, async (_emptyDb, emptySchema) => {
      const { version, durability } = await serverFacts(target, db);
      for (const schema of [fullSchema, emptySchema]) {
        await migrate(db, { dialect: target.dialect, schema });
        await migrateInbox(db, { dialect: target.dialect, schema });
      }
      // The baseline table holds one dead letter, the one the full table's pages show, so every page has its row.
      await fill(target, db, emptySchema, { pending: 0, dead: 1, first: DEAD / 2 });
      progress(`${target.label}: filling ${count(PENDING)} pending rows and ${count(DEAD)} dead letters`);
      const fillStarted = performance.now();
      await fill(target, db, fullSchema, { pending: PENDING, dead: DEAD, first: 0 });
      await analyze(target, db, fullSchema, 'txoutbox');
      const fillSeconds = (performance.now() - fillStarted) / 1000;
      const states = await sql<{ state: string; n: number | string }>`
        SELECT state, COUNT(*) AS n FROM ${sql.id(fullSchema, 'txoutbox')} GROUP BY state ORDER BY state`.execute(db);
      const held = states.rows.map((row) => `${count(Number(row.n))} ${row.state}`).join(', ');
      await settle(target, db, progress);
      progress(`${target.label}: filled in ${fillSeconds.toFixed(0)} s; starting the dashboards`);

      const full = await openOn(target, fullSchema);
      const empty = await openOn(target, emptySchema);
      try {
        const middle = `dead-${DEAD / 2}`;
        const { rows } = await sql<{
          seq: string | number;
        }>`SELECT seq FROM ${sql.id(fullSchema, 'txoutbox')} WHERE id = ${middle}`.execute(db);
        const middleSeq = String(rows[0]!.seq);
        const pages = (table: string) =>
          [
            ['overview', '/'],
            ['overview fragment (refresh)', '/fragment/overview'],
            ['dead letters, first page', `/dead?table=${encodeURIComponent(table)}`],
            ['dead letters, page 100 (keyset)', `/dead?table=${encodeURIComponent(table)}&after=${middleSeq}`],
            ['dead letters, filter by error text', `/dead?table=${encodeURIComponent(table)}&error=NO_ROUTE`],
            ['dead letters, filter by key', `/dead?table=${encodeURIComponent(table)}&key=key-42`],
            ['dead letters, older than 30m', `/dead?table=${encodeURIComponent(table)}&olderThan=30m`],
            ['one dead letter', `/dead/show?table=${encodeURIComponent(table)}&id=${middle}`],
            ['confirm retry of one', `/dead/confirm?table=${encodeURIComponent(table)}&id=${middle}&do=retry:selected`],
            ['blocked keys', `/blocked?table=${encodeURIComponent(table)}`],
            ['inboxes', '/inbox'],
          ] as const;
        const timings: PageTiming[] = [];
        const fullPages = pages(full.table);
        const emptyPages = pages(empty.table);
        for (let p = 0; p < fullPages.length; p++) {
          const [name, fullPath] = fullPages[p]!;
          const emptyPath = emptyPages[p]![1];
          const firstMs = await timeGet(`${full.base}${fullPath}`);
          const fullMs = new Float64Array(REPEATS);
          const emptyMs = new Float64Array(REPEATS);
          for (let i = 0; i < WARMUP; i++) await timeGet(`${full.base}${fullPath}`);
          for (let i = 0; i < REPEATS; i++) {
            // Interleaved, so both see the same machine.
            fullMs[i] = await timeGet(`${full.base}${fullPath}`);
            emptyMs[i] = await timeGet(`${empty.base}${emptyPath}`);
          }
          timings.push({ page: name, firstMs, fullMs, emptyMs });
          progress(`${target.label}: ${name}: median ${ms(median(fullMs))} ms (empty ${ms(median(emptyMs))} ms)`);
        }
        const rounds = new Float64Array(5);
        const emptyRounds = new Float64Array(5);
        for (let i = 0; i < rounds.length; i++) {
          let started = performance.now();
          await full.dashboard.sampleNow();
          rounds[i] = performance.now() - started;
          started = performance.now();
          await empty.dashboard.sampleNow();
          emptyRounds[i] = performance.now() - started;
        }
        const selectOne = new Float64Array(REPEATS);
        for (let i = 0; i < REPEATS; i++) {
          const started = performance.now();
          await sql`SELECT 1`.execute(db);
          selectOne[i] = performance.now() - started;
        }
        return {
          target,
          version,
          durability,
          fillSeconds,
          rows: held,
          roundMs: { full: median(rounds), empty: median(emptyRounds) },
          selectOneMs: median(selectOne),
          pages: timings,
        };
      } finally {
        for (const d of [full, empty]) {
          d.server.close();
          d.server.closeAllConnections();
          await d.dashboard.close();
        }
      }
    }),
  );
}

function render(date: Date, reports: readonly DbReport[]): string {
  const lines = [
    '## Dashboard',
    '',
    ...machineFacts('npm run bench -- dashboard', date),
    ...reports.map((r) => `- ${r.target.label}: ${r.version} (${r.durability})`),
    '',
    `An outbox table of ${count(PENDING)} pending messages (${count(KEYS)} keys) and ${count(DEAD)} dead letters ` +
      `(${count(BLOCKING)} of them holding a key with messages waiting), next to a baseline table in the same run. Time to first ` +
      `render: GET to the last byte of the server-rendered page, the first request, then the median and p95 of ${REPEATS} ` +
      `(after ${WARMUP} warm-ups), interleaved with the same page on the baseline table (the same schema holding one dead ` +
      "letter). Goal: ≤ 1 s. The overview renders from the sampler's last reading; the reading round (every 5 s in the " +
      "background, one connection per database) is timed on its own (median of 5): it bounds how old the overview's figures are.",
  ];
  for (const r of reports) {
    lines.push(
      '',
      `### ${r.target.label}`,
      '',
      `${r.rows} · filled in ${r.fillSeconds.toFixed(0)} s · a reading round (status, leases, sent rows): ` +
        `**${ms(r.roundMs.full)} ms** (baseline table ${ms(r.roundMs.empty)} ms) · \`SELECT 1\` round trip ${ms(r.selectOneMs)} ms`,
      '',
      '| Page | First ms | Median ms | p95 ms | Baseline median ms | Ratio (medians) |',
      '|---|---:|---:|---:|---:|---:|',
      ...r.pages.map((p) => {
        const sorted = Float64Array.from(p.fullMs).sort();
        return `| ${p.page} | ${ms(p.firstMs)} | ${ms(median(p.fullMs))} | ${ms(percentile(sorted, 0.95))} | ${ms(median(p.emptyMs))} | ${ratio(median(p.fullMs) / median(p.emptyMs))} |`;
      }),
    );
  }
  return `${lines.join('\n')}\n`;
}
