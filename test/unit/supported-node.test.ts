import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LAUNCHER = 'scripts/supported-node.mjs';

function run(node: string, args: string[]) {
  return spawnSync(node, [LAUNCHER, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
}

/** This kind of machine ships Node 20; the README's commands must still run on a supported Node there. */
const MACHINE_NODE = '/usr/bin/node';
const machineNodeMajor = existsSync(MACHINE_NODE)
  ? Number(spawnSync(MACHINE_NODE, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).stdout)
  : Number.NaN;

describe('scripts/supported-node.mjs (how npm test, demo, bench and chaos find a supported Node)', () => {
  it('runs the command as it is on a supported Node', () => {
    const result = run(process.execPath, ['node', '-p', 'process.version']);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(process.version);
    expect(result.stderr).toBe('');
  });

  it('gives the bin folder of the pinned Node 22 and 24 releases, each checked by its version', () => {
    for (const [major, version] of [
      ['22', 'v22.23.5'],
      ['24', 'v24.22.3'],
    ]) {
      const result = run(process.execPath, ['--bin', major!]);
      expect(result.status, result.stderr).toBe(0);
      const bin = result.stdout.trim();
      expect(spawnSync(`${bin}/node`, ['--version'], { encoding: 'utf8' }).stdout.trim()).toBe(version);
    }
  });

  it('refuses an unknown release and a missing command with a message', () => {
    const unknown = run(process.execPath, ['--bin', '18']);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toContain('no pinned Node.js release for "18"');
    const usage = run(process.execPath, []);
    expect(usage.status).toBe(1);
    expect(usage.stderr).toContain('usage:');
  });

  it("passes the command's exit code through", () => {
    expect(run(process.execPath, ['node', '-e', 'process.exit(7)']).status).toBe(7);
  });

  // Needs a Node older than 22 to start from: this machine's own (/usr/bin/node, Node 20 on our machines).
  it.runIf(machineNodeMajor < 22)("started by the machine's older Node, runs the command on Node 24", () => {
    const result = run(MACHINE_NODE, ['node', '-p', 'process.version']);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe('v24.22.3');
    expect(result.stderr).toContain('txoutbox needs 22 or later, so this runs on Node 24.22.3');
  });
});
