import type { PublishOutcome } from './broker.js';

/** Every outcome but ok: what a publish that did not (or may not) reach the broker reports. */
export type Failure = Exclude<PublishOutcome, { status: 'ok' }>;

/** The broker's persisted acknowledgement. One shared object: outcomes are read and copied, never changed. */
export const OK: PublishOutcome = { status: 'ok' };

/** Not accepted, or not known to be: the relay tries again later with the same id. */
export const retryable = (error: string): Failure => ({ status: 'retryable', error });

/** Not sent (or not confirmed) because the broker cannot be reached: the broker's state, not the message's fault. */
export const unreachable = (error: string): Failure => ({ status: 'retryable', error, unreachable: true });

/** Can never succeed as it is: the relay dead-letters it now. */
export const permanent = (error: string): Failure => ({ status: 'permanent', error });
