import type { Logger } from './logger.js';

/**
 * Resolves once the first SIGTERM or SIGINT has drained the sidecar (`shutdown`); a second signal exits at once,
 * without draining. Install it before saying "ready": whoever waits for that line may signal at once, and an
 * unhandled SIGTERM kills the process without draining.
 */
export function untilStopSignal(log: Logger, shutdown: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now without draining');
        process.exit(signal === 'SIGINT' ? 130 : 143);
      }
      stopping = true;
      log.info({ signal }, 'draining: finishing batches in flight, then exiting (send the signal again to exit at once)');
      void (async () => {
        await shutdown();
        log.info('stopped cleanly');
        resolve();
      })();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
