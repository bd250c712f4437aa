import type { RelayStore } from '../dialects/dialect.js';

/**
 * Deletes sent rows past the retention window, in small batches (at most ten a call), one call at a time: a slow
 * one must not pile up behind the interval. Shared by both relay modes, which keep sent rows the same way.
 */
export class SentCleanup {
  private running: Promise<number> | null = null;

  constructor(
    private readonly store: RelayStore,
    private readonly options: { retainSentMs: number; cleanupBatchSize: number },
    private readonly report: (error: Error) => void,
  ) {}

  run(): Promise<number> {
    this.running ??= this.rounds().finally(() => (this.running = null));
    return this.running;
  }

  private async rounds(): Promise<number> {
    let deleted = 0;
    try {
      for (let round = 0; round < 10; round++) {
        const count = await this.store.cleanup(this.options.retainSentMs, this.options.cleanupBatchSize);
        deleted += count;
        if (count < this.options.cleanupBatchSize) break;
      }
    } catch (error) {
      this.report(error instanceof Error ? error : new Error(String(error)));
    }
    return deleted;
  }
}
