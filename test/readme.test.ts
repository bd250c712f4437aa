import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { EXIT } from '../src/cli/errors.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const readme = readFileSync(`${ROOT}README.md`, 'utf8');
const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as Record<string, Record<string, string> | undefined>;
const lock = JSON.parse(readFileSync(`${ROOT}package-lock.json`, 'utf8')) as {
  packages: Record<string, Record<string, Record<string, string> | undefined>>;
};

/** README.md and every page under docs/, as paths relative to the root. */
const pages = [
  'README.md',
  ...readdirSync(`${ROOT}docs`, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.md'))
    .map((file) => join('docs', file))
    .sort(),
];
const read = (page: string) => readFileSync(`${ROOT}${page}`, 'utf8');

/** A page's text outside fenced code blocks, where links and headings mean nothing. */
function prose(text: string): string {
  return text.replace(/^```[\s\S]*?^```/gm, '');
}

/** The body of a section: from its heading to the next heading of the same or a higher level (or the end). */
function sectionOf(page: string, heading: string): string {
  const lines = read(page).split('\n');
  const start = lines.indexOf(heading);
  expect(start, `${page} has a heading "${heading}"`).toBeGreaterThanOrEqual(0);
  const level = heading.indexOf(' ');
  let fenced = false; // a `# comment` in a code block is not a heading
  const end = lines.findIndex((line, index) => {
    if (line.startsWith('```')) fenced = !fenced;
    return index > start && !fenced && /^#+ /.test(line) && line.indexOf(' ') <= level;
  });
  return lines.slice(start + 1, end === -1 ? undefined : end).join('\n');
}

/** GitHub's anchor for a heading: its text lower-cased, punctuation dropped, each space a hyphen. */
function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/<[^>]+>/g, '')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M} _-]/gu, '')
    .replace(/ /g, '-');
}

/** The anchors a page has: one per heading (repeats numbered as GitHub does), and explicit `<a id>`s. */
function anchorsOf(page: string): Set<string> {
  const text = prose(read(page));
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const [, heading] of text.matchAll(/^#{1,6} +(.+?) *#* *$/gm)) {
    const base = slug(heading!);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  for (const [, id] of text.matchAll(/<a (?:id|name)="([^"]+)"/g)) anchors.add(id!);
  return anchors;
}

/** Relative links of a page (not inside code): `[text](target)`, with schemes such as https: left out. */
function relativeLinks(page: string): string[] {
  const text = prose(read(page)).replace(/`[^`\n]*`/g, '');
  return [...text.matchAll(/\]\(([^)\s]+)\)/g)]
    .map(([, target]) => target!)
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target));
}

/** The commands of the README's first code block, comments dropped. */
function firstCommands(): string[] {
  const block = /```(\w*)\n([\s\S]*?)```/.exec(readme);
  expect(block?.[1]).toBe('bash');
  return block![2]!
    .split('\n')
    .map((line) => line.replace(/\s+#.*$/, '').trim())
    .filter((line) => line !== '');
}

/** The README is the front door: its first commands must work on a fresh clone, where nothing is installed yet. */
describe("the README's first commands", () => {
  it('install from the lockfile before running the demo, then run the tests', () => {
    expect(firstCommands()).toEqual(['npm ci && npm run demo', 'npm test']);
  });

  it('name scripts that exist, and the demo needs nothing `npm ci` does not install', () => {
    // On a machine whose own Node is older than 22, scripts/supported-node.mjs runs the demo on Node 24 (test/unit/supported-node.test.ts).
    expect(pkg.scripts?.demo).toBe('node scripts/supported-node.mjs node --import tsx demo/demo.ts');
    expect(pkg.scripts?.test).toBeDefined();
    // What the demo runs with: tsx, and PGlite for the embedded PostgreSQL (test/demo.test.ts runs `npm run demo`).
    for (const name of ['tsx', '@electric-sql/pglite', 'kysely']) expect(pkg.devDependencies?.[name], name).toBeDefined();
  });

  it('can be installed with `npm ci`: the lockfile matches package.json', () => {
    const root = lock.packages[''];
    for (const field of ['dependencies', 'devDependencies', 'peerDependencies', 'optionalDependencies'] as const) {
      expect(root?.[field] ?? {}, field).toEqual(pkg[field] ?? {});
    }
    for (const name of [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.devDependencies ?? {})]) {
      expect(lock.packages[`node_modules/${name}`], `${name} in package-lock.json`).toBeDefined();
    }
  });
});

describe('the docs say what the promises assume', () => {
  it('covers durability settings, replication failover and two-phase commit with notify', () => {
    // The README links the page; the section lives in docs/guarantees.md.
    expect(readme).toContain('](docs/guarantees.md)');
    const section = sectionOf('docs/guarantees.md', '## What the promises assume');
    expect(section).toContain('synchronous_commit = off');
    expect(section).toContain('asynchronous replication');
    expect(section).toContain('PREPARE TRANSACTION');
    expect(section).toContain('notify: false');
  });
});

describe('the README and docs/ link only to what exists', () => {
  it('finds the docs pages', () => {
    for (const page of ['docs/relay.md', 'docs/sidecar.md', 'docs/errors.md', 'docs/brokers/rabbitmq.md']) {
      expect(pages).toContain(page);
    }
  });

  it.each(pages)('every relative link of %s names a file that exists, and an anchor that it has', (page) => {
    const broken: string[] = [];
    for (const target of relativeLinks(page)) {
      const [path = '', anchor] = target.split('#');
      const file = path === '' ? page : relative(ROOT, resolve(ROOT, dirname(page), decodeURIComponent(path)));
      if (!existsSync(`${ROOT}${file}`)) broken.push(`${target}: ${file} does not exist`);
      else if (anchor !== undefined && file.endsWith('.md') && !anchorsOf(file).has(anchor)) {
        broken.push(`${target}: ${file} has no heading with the anchor #${anchor}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('the README links every docs page', () => {
    const linked = new Set(
      relativeLinks('README.md').map((target) => relative(ROOT, resolve(ROOT, decodeURIComponent(target.split('#')[0]!)))),
    );
    expect(pages.filter((page) => page !== 'README.md' && !linked.has(page))).toEqual([]);
  });
});

describe('docs/errors.md documents every error code and exit code', () => {
  const errorsPage = read('docs/errors.md');

  it('names every TXOUTBOX_ code string in src/', () => {
    const codes = new Set<string>();
    for (const file of readdirSync(`${ROOT}src`, { recursive: true, encoding: 'utf8' })) {
      if (!file.endsWith('.ts')) continue;
      for (const [code] of readFileSync(`${ROOT}src/${file}`, 'utf8').matchAll(/TXOUTBOX_[A-Z_]+/g)) codes.add(code);
    }
    expect([...codes]).toContain('TXOUTBOX_INVALID_MESSAGE');
    expect([...codes].filter((code) => !new RegExp(`\\b${code}\\b`).test(errorsPage)).sort()).toEqual([]);
  });

  it('lists every exit code of the CLI in its table', () => {
    const table = sectionOf('docs/errors.md', '## CLI exit codes');
    for (const [name, code] of Object.entries(EXIT)) expect(table, name).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'));
  });
});
