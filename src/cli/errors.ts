/** Exit codes of the txoutbox CLI; documented in the README, stable for scripts. */
export const EXIT = {
  ok: 0,
  /** Something failed at run time (a query, a publish); the message says what. */
  failure: 1,
  /** The configuration file is missing or invalid, or the command line is wrong. */
  config: 2,
  /** A database could not be reached. */
  connect: 3,
  /** The outbox tables are missing: run `txoutbox migrate`. */
  schema: 4,
  /** `dead show|retry|discard` named ids that are not dead letters. */
  notFound: 5,
  /** A bulk action was not confirmed. */
  aborted: 6,
  /** `slot drop`: a replication slot is in use by a running relay. */
  slotActive: 7,
} as const;

/** An error meant for a person at a terminal: what went wrong, what to do, and the exit code to leave with. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}
