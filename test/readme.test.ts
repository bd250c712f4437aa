import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const readme = readFileSync(`${ROOT}README.md`, 'utf8');
const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as Record<string, Record<string, string> | undefined>;
const lock = JSON.parse(readFileSync(`${ROOT}package-lock.json`, 'utf8')) as {
  packages: Record<string, Record<string, Record<string, string> | undefined>>;
};

const read = (page: string) => readFileSync(`${ROOT}${page}`, 'utf8');

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
    expect(pkg.scripts?.demo).toBe('node --import tsx demo/demo.ts');
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
