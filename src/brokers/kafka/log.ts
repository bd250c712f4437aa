import type { logCreator } from 'kafkajs';
import type { KafkaLogLevel } from './options.js';

/** kafkajs's numeric levels. */
export const LOG_LEVELS: Record<KafkaLogLevel, number> = { nothing: 0, error: 1, warn: 2, info: 4, debug: 5 };

/**
 * kafkajs's console format, without its warning about bounded retries: the adapter never sends through a
 * producer again after a send failed, so the sequence-number hazard the warning is about cannot arise.
 */
export const consoleLog: logCreator =
  () =>
  ({ namespace, level, label, log }) => {
    if (log.message.startsWith('Limiting retries for the idempotent producer')) return;
    const line = JSON.stringify({ level: label, ...log, message: `${namespace ? `[${namespace}] ` : ''}${log.message}` });
    if (level <= 1) console.error(line);
    else if (level === 2) console.warn(line);
    else console.info(line);
  };
