import { z } from 'zod';
import { ConfigError, createRelay, MemoryBroker, type RelayOptions } from '../../src/index.js';
import { relayTuningSchema } from '../../src/relay/options.js';

/** One value for one relay tuning option (`backoff.initialMs` is ['backoff', 'initialMs']) and whether it is in bounds. */
export interface TuningProbe {
  path: string[];
  value: unknown;
  accepted: boolean;
  /** What the value is: 'at min', 'below min', 'fractional', … */
  what: string;
  /** Whether a config file may also write the value as text (numbers and booleans: `${VAR}` gives text). */
  textual: boolean;
}

/**
 * Values at and just past the bounds of every relay tuning option, read from the library's own schema: a new
 * option or a changed bound is probed without editing this list. Throws on a kind of option it cannot probe.
 */
export function tuningProbes(shape: z.ZodRawShape = relayTuningSchema.shape, prefix: string[] = []): TuningProbe[] {
  return Object.entries(shape).flatMap(([key, schema]) => probesOf(schema as z.ZodType, [...prefix, key]));
}

function probesOf(schema: z.ZodType, path: string[]): TuningProbe[] {
  if (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) return probesOf(schema.unwrap() as z.ZodType, path);
  const scalar = schema instanceof z.ZodNumber || schema instanceof z.ZodBoolean;
  const probe = (what: string, value: unknown, accepted: boolean): TuningProbe => ({
    path,
    value,
    accepted,
    what,
    textual: scalar && value !== null,
  });
  const nothing = probe('null (an empty YAML value)', null, false);
  if (schema instanceof z.ZodObject) {
    return [
      probe('empty', {}, true),
      probe('with an unknown key', { nope: 1 }, false),
      nothing,
      ...tuningProbes(schema.shape, path),
    ];
  }
  if (schema instanceof z.ZodNumber) {
    const { minValue: min, maxValue: max, isInt } = schema;
    if (min === null || max === null || !Number.isFinite(min)) throw new Error(`${path.join('.')}: a number without a minimum`);
    const probes = [probe('at min', min, true), probe('below min', isInt ? min - 1 : min - 0.5, false), nothing];
    probes.push(probe('fractional', min + 0.5, !isInt));
    // int() alone caps a value at the largest safe integer; an option's own maximum is smaller.
    if (max < Number.MAX_SAFE_INTEGER)
      probes.push(probe('at max', max, true), probe('above max', isInt ? max + 1 : max + 0.5, false));
    else if (isInt) probes.push(probe('above the largest safe integer', 2 ** 53, false));
    return probes;
  }
  if (schema instanceof z.ZodBoolean) {
    return [probe('true', true, true), probe('false', false, true), probe('a word', 'yes', false), probe('a number', 1, false)];
  }
  if (schema instanceof z.ZodEnum) {
    return [...schema.options.map((option) => probe(String(option), option, true)), probe('another word', 'other', false)];
  }
  if (schema instanceof z.ZodString) {
    const { minLength: min, maxLength: max } = schema;
    const probes = [probe('at min length', 'x'.repeat(min ?? 0), true), probe('a number', 5, false)];
    if (min !== null && min > 0) probes.push(probe('below min length', 'x'.repeat(min - 1), false));
    if (max !== null)
      probes.push(probe('at max length', 'x'.repeat(max), true), probe('above max length', 'x'.repeat(max + 1), false));
    return probes;
  }
  throw new Error(`${path.join('.')}: no probes for a ${schema.type} option; add them here`);
}

/** `{ backoff: { initialMs: value } }` for the path ['backoff', 'initialMs']. */
export function settingOf(path: string[], value: unknown): Record<string, unknown> {
  return path.reduceRight<unknown>((inner, key) => ({ [key]: inner }), value) as Record<string, unknown>;
}

/**
 * Options a probe is tried with, so that only its own bounds decide: a lease at its minimum (100 ms) is only valid
 * with a publish deadline under it.
 */
export function companionsOf(path: string[]): Record<string, unknown> {
  return path.join('.') === 'leaseMs' ? { publishTimeoutMs: 10 } : {};
}

/**
 * What createRelay (PostgreSQL, no connection made) says of these options: nothing when it takes them, else the
 * problems of its ConfigError (`batchSize: Too small: …`), one by one.
 */
export function createRelayProblems(settings: Record<string, unknown>): string[] {
  try {
    createRelay({
      db: { executeQuery: () => undefined },
      dialect: 'postgres',
      broker: new MemoryBroker(),
      ...settings,
    } as unknown as RelayOptions);
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const prefix = 'Invalid createRelay options: ';
    if (!error.message.startsWith(prefix)) throw error;
    return error.message.slice(prefix.length).split('; ');
  }
}
