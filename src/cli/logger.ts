import { pino, type Logger } from 'pino';
import type { Redactor } from './redact.js';
import { visible } from './visible.js';

export type { Logger };

function redactDeep(value: unknown, redactor: Redactor, depth = 0): unknown {
  // Control characters are escaped in the text itself, so `jq -r` cannot print them raw either.
  if (typeof value === 'string') return visible(redactor.text(value));
  if (value instanceof Error) return { type: value.name, message: visible(redactor.error(value)) };
  if (depth > 5 || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map((item) => redactDeep(item, redactor, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, redactDeep(item, redactor, depth + 1)]));
}

/**
 * JSON lines on stdout (or `destination`), one per event; every string in a line passes through the redactor, so
 * a password in a driver's error message never reaches the log, and no control character reaches a terminal.
 */
export function createLogger(level: string, redactor: Redactor, destination: number = 1): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((arg) => redactDeep(arg, redactor)) as Parameters<typeof method>);
        },
      },
    },
    // Synchronous writes: a line logged just before exit is never lost, and a sidecar logs little.
    pino.destination({ fd: destination, sync: true }),
  );
}
