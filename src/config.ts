import type { z } from 'zod';
import { ConfigError } from './errors.js';

/** Validates the options of a txoutbox factory, turning every problem into one ConfigError that names the field. */
export function parseOptions<S extends z.ZodType>(schema: S, options: unknown, factory: string): z.output<S> {
  const parsed = schema.safeParse(options);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || 'options'}: ${issue.message}`);
    throw new ConfigError(`Invalid ${factory} options: ${problems.join('; ')}`);
  }
  return parsed.data;
}
