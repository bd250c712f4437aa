#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import { dashboardCommand } from './commands/dashboard.js';
import { doctorCommand } from './commands/doctor.js';
import { deadActCommand, deadListCommand, deadShowCommand, terminalConfirm, type DeadIo } from './commands/dead.js';
import { migrateCommand } from './commands/migrate.js';
import { relayCommand } from './commands/relay.js';
import { slotCreateCommand, slotDropCommand, slotStatusCommand } from './commands/slot.js';
import { statusCommand } from './commands/status.js';
import { loadConfig } from './config.js';
import { CliError, EXIT } from './errors.js';
import { Redactor } from './redact.js';
import { visible } from './visible.js';

/** The `txoutbox` command line. Only the bin entry imports this module. */
export function buildProgram(): Command {
  const program = new Command('txoutbox')
    .description('Transactional outbox sidecar: relay committed messages to brokers, and operate the outbox tables.')
    .addOption(
      new Option('-c, --config <file>', 'YAML or JSON configuration file').env('TXOUTBOX_CONFIG').default('txoutbox.yaml'),
    )
    .showHelpAfterError()
    // What commander prints echoes what was typed (an unknown command, a bad option value).
    .configureOutput({
      writeOut: (text) => void process.stdout.write(visible(text)),
      writeErr: (text) => void process.stderr.write(visible(text)),
    })
    .exitOverride();
  const config = () => loadConfig(program.opts<{ config: string }>().config);
  // Every line the commands print: payloads, last errors and ids may carry terminal escape sequences.
  const out = (line: string) => void process.stdout.write(`${visible(line)}\n`);
  const io = (): DeadIo => ({
    out,
    err: (line) => void process.stderr.write(`${visible(line)}\n`),
    confirm: terminalConfirm(),
    progress: process.stderr.isTTY === true,
  });
  const filters = (command: Command) =>
    command
      .option('--database <name>', 'only this configured database')
      .option('--table <name>', 'only this outbox table')
      .option('--topic <pattern>', 'topic, * matches anything (e.g. orders.*)')
      .option('--key <key>', 'message key')
      .option('--error <text>', 'last error contains this text (case-insensitive)')
      .option('--older-than <age>', 'enqueued at least this long ago (30s, 5m, 2h, 7d)')
      .option('--newer-than <age>', 'enqueued at most this long ago')
      .option('--id <id...>', 'message ids');

  program
    .command('relay')
    .description('run the relays for every configured database and table until SIGTERM/SIGINT (then drain and exit 0)')
    .action(async () => relayCommand(await config()));

  program
    .command('dashboard')
    .description('serve the operator dashboard (overview, dead letters, blocked keys, inboxes) until SIGTERM/SIGINT')
    .option('--host <address>', 'listen on this address (default http.host, 127.0.0.1)')
    .option('--port <port>', 'listen on this port (default http.port; 0 picks a free one)')
    .action(async (options: { host?: string; port?: string }) => dashboardCommand(await config(), options));

  program
    .command('migrate')
    .description('create or upgrade the outbox and inbox tables in every configured database (idempotent)')
    .option('--database <name>', 'only this configured database')
    .option('--outbox', 'only the outbox tables (databases[].tables)')
    .option('--inbox', 'only the inbox tables (databases[].inbox)')
    .action(async (options: { database?: string; outbox?: boolean; inbox?: boolean }) =>
      migrateCommand(await config(), { ...options, out }),
    );

  program
    .command('status')
    .description('per database, table and topic: pending, oldest pending age, in flight, dead, sent in the last minute')
    .option('--database <name>', 'only this configured database')
    .option('--json', 'machine-readable output')
    .action(async (options: { database?: string; json?: boolean }) => statusCommand(await config(), { ...options, out }));

  program
    .command('doctor')
    .description('find keys whose head bookkeeping is off (none or several heads) and repair them')
    .option('--database <name>', 'only this configured database')
    .option('--table <name>', 'only this outbox table')
    .option('--dry-run', 'only say what would be repaired')
    .option('--json', 'machine-readable output')
    .action(async (options: { database?: string; table?: string; dryRun?: boolean; json?: boolean }) =>
      doctorCommand(await config(), { ...options, out }),
    );

  const slot = program
    .command('slot')
    .description('the replication slots of tables in mode logical (relay.mode: logical, PostgreSQL)');
  const slotCommand = (name: string, description: string) =>
    slot
      .command(name)
      .description(description)
      .option('--database <name>', 'only this configured database')
      .option('--table <name>', 'only this outbox table');
  slotCommand(
    'create',
    'create the publication(s) and slot(s), unless they exist (a relay creates its slot on start too)',
  ).action(async (options: { database?: string; table?: string }) => slotCreateCommand(await config(), { ...options, out }));
  slotCommand('drop', 'drop the slot(s) so the server keeps no WAL for them; refuses while a relay streams from one').action(
    async (options: { database?: string; table?: string }) => slotDropCommand(await config(), { ...options, out }),
  );
  slotCommand('status', 'per slot: exists, streamed by a relay, confirmed position, retained WAL, lag, wal_status')
    .option('--json', 'machine-readable output')
    .action(async (options: { database?: string; table?: string; json?: boolean }) =>
      slotStatusCommand(await config(), { ...options, out }),
    );

  const dead = program.command('dead').description('inspect, retry and discard dead letters');
  filters(dead.command('list').description('list dead letters, oldest first'))
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'machine-readable output')
    .action(async (options) => deadListCommand(await config(), options, io()));
  dead
    .command('show <id>')
    .description('one dead letter in full: headers, payload, last error')
    .option('--database <name>', 'only this configured database')
    .option('--table <name>', 'only this outbox table')
    .option('--json', 'machine-readable output')
    .action(async (id: string, options) => deadShowCommand(await config(), id, options, io()));
  for (const action of ['retry', 'discard'] as const) {
    filters(
      dead
        .command(`${action} [ids...]`)
        .description(
          action === 'retry'
            ? 'make dead letters pending again (attempts reset); a running relay publishes them in key order'
            : 'delete dead letters for good; their keys move on to the next message',
        ),
    )
      .option('--all', 'every dead letter (of the selected databases/tables)')
      .option('-y, --yes', 'do not ask for confirmation')
      .option('--dry-run', 'only say how many would be affected')
      .action(async (ids: string[], options) => deadActCommand(await config(), action, ids, options, io()));
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not failures; commander already printed the usage problem.
      return error.exitCode === 0 || error.code === 'commander.helpDisplayed' ? EXIT.ok : EXIT.config;
    }
    if (error instanceof CliError) {
      process.stderr.write(`txoutbox: ${visible(error.message)}\n`);
      return error.exitCode;
    }
    // Unexpected: the message still goes through the URL redaction, since drivers quote connection strings.
    process.stderr.write(`txoutbox: ${visible(new Redactor().error(error))}\n`);
    return EXIT.failure;
  }
}

/**
 * Resolves once everything written to `stream` so far has reached the OS. On a pipe Node writes asynchronously, and
 * `process.exit` would drop what the reader has not taken yet (a `dead list --json | jq` cut at 64 KiB). A reader
 * that went away (`| head`) is not waited for.
 */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  if (stream.destroyed || !stream.writable) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => (stream.off('error', done), resolve());
    stream.once('error', done);
    stream.write('', done);
  });
}

const code = await main(process.argv);
await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
// Pools, sockets and timers of a finished command must not keep the process alive.
process.exit(code);
