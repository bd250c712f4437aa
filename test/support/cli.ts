import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MAIN = join(ROOT, 'src/cli/main.ts');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running `txoutbox` process (the real CLI, run from source with tsx). */
export class CliProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<CliResult>;
  private readonly waiters = new Set<() => void>();

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stdout += chunk;
      for (const wake of this.waiters) wake();
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      for (const wake of this.waiters) wake();
    });
    this.exited = new Promise((resolve) =>
      child.once('close', (code, signal) => {
        for (const wake of this.waiters) wake();
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      }),
    );
  }

  /** Structured log lines printed so far. */
  logs(): Record<string, unknown>[] {
    return this.stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** Waits for a log line matching `match`; fails with the output so far if the process exits or time runs out. */
  async waitForLog(match: (line: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logs().find(match);
      if (found !== undefined) return found;
      if (this.child.exitCode !== null || this.child.signalCode !== null || Date.now() > deadline) {
        throw new Error(`the CLI did not log the expected line.\nstdout:\n${this.stdout}\nstderr:\n${this.stderr}`);
      }
      await new Promise<void>((resolve) => {
        const wake = () => (this.waiters.delete(wake), clearTimeout(timer), resolve());
        const timer = setTimeout(wake, 200);
        this.waiters.add(wake);
      });
    }
  }

  /** The metrics/health base URL the relay logs once it runs. */
  async httpUrl(): Promise<string> {
    const line = await this.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('relaying'));
    return line.http as string;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    this.child.kill(signal);
  }
}

export interface CliWorkspace {
  configPath: string;
  writeConfig(config: unknown): Promise<void>;
  spawn(args: string[], env?: NodeJS.ProcessEnv): CliProcess;
  run(args: string[], env?: NodeJS.ProcessEnv): Promise<CliResult>;
  cleanup(): Promise<void>;
}

/** A temporary folder with a config file, and helpers to run the CLI against it. */
export async function cliWorkspace(): Promise<CliWorkspace> {
  const dir = await mkdtemp(join(tmpdir(), 'txoutbox-cli-'));
  const configPath = join(dir, `txoutbox-${randomBytes(3).toString('hex')}.yaml`);
  const started: CliProcess[] = [];
  const spawnCli = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--config', configPath, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const cli = new CliProcess(child);
    started.push(cli);
    return cli;
  };
  return {
    configPath,
    writeConfig: (config) => writeFile(configPath, typeof config === 'string' ? config : stringify(config)),
    spawn: spawnCli,
    run: (args, env) => spawnCli(args, env).exited,
    async cleanup() {
      for (const cli of started) if (cli.child.exitCode === null && cli.child.signalCode === null) cli.kill('SIGKILL');
      await Promise.all(started.map((cli) => cli.exited));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Reads one sample of a Prometheus text exposition: the value of `name` with exactly these labels (0 if absent). */
export function metricValue(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const match = /^([^{\s]+)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    const wanted = Object.entries(labels);
    if (wanted.length === Object.keys(found).length && wanted.every(([k, v]) => found[k] === v)) return Number(match[3]);
  }
  return 0;
}
