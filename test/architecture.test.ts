import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cruise, type IReporterOutput } from 'dependency-cruiser';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const require = createRequire(import.meta.url);

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(join(dir, entry.name)) : entry.name.endsWith('.ts') ? [join(dir, entry.name)] : [],
  );
}

describe('the architecture', () => {
  it('keeps the import rules of .dependency-cruiser.cjs: no cycle, the library never imports the sidecar', async () => {
    const rules = require(join(ROOT, '.dependency-cruiser.cjs')) as { forbidden: unknown[]; options: object };
    const result: IReporterOutput = await cruise(['src'], {
      ...rules.options,
      validate: true,
      ruleSet: { forbidden: rules.forbidden },
    } as never);
    const output = result.output as {
      summary: { violations: { rule: { name: string }; from: string; to: string; cycle?: { name: string }[] }[] };
    };
    const violations = output.summary.violations.map(
      (v) => `${v.rule.name}: ${v.from} → ${v.cycle ? v.cycle.map((step) => step.name).join(' → ') : v.to}`,
    );
    expect(violations).toEqual([]);
    // The rules must have had something to check.
    expect((result.output as { modules: unknown[] }).modules.length).toBeGreaterThan(50);
  });

  it('tests no database by name outside src/dialects/: the rest asks the dialect port', () => {
    const names = "'(?:postgres|postgresql|mysql|mariadb)'";
    const comparison = new RegExp(`[!=]==\\s*${names}|${names}\\s*[!=]==|case\\s+${names}\\s*:`);
    const found = sourceFiles('src')
      .filter((file) => !file.startsWith(join('src', 'dialects')))
      .flatMap((file) =>
        readFileSync(join(ROOT, file), 'utf8')
          .split('\n')
          .flatMap((line, index) => (comparison.test(line) ? [`${file}:${index + 1}: ${line.trim()}`] : [])),
      );
    expect(found).toEqual([]);
  });

  it('repeats no block of six or more lines in src/', async () => {
    // jscpd's CommonJS build: its ESM one imports 'colors/safe' without an extension and does not load.
    const { detectClones } = require('jscpd') as typeof import('jscpd');
    const clones = await detectClones({
      path: [join(ROOT, 'src')],
      minLines: 6,
      format: ['typescript'],
      silent: true,
      reporters: [],
    });
    const at = (d: { sourceId: string; start: { line: number }; end: { line: number } }) =>
      `${relative(ROOT, d.sourceId)}:${d.start.line}-${d.end.line}`;
    expect(clones.map((clone) => `${at(clone.duplicationA)} = ${at(clone.duplicationB)}`)).toEqual([]);
  });
});
