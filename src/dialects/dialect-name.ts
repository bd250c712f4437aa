/** The databases txoutbox supports. MariaDB uses the `mysql` dialect. */
export const DIALECT_NAMES = ['postgres', 'mysql'] as const;
export type DialectName = (typeof DIALECT_NAMES)[number];
