/**
 * A PostgreSQL array literal (`{"a",NULL,"\\x00ff"}`) for a JavaScript array, as node-postgres writes one: for
 * drivers that would type an array parameter by its first element instead. Sent untyped, the server reads it with
 * the statement's own cast (`$1::bytea[]`).
 */
export function postgresArrayLiteral(values: readonly unknown[]): string {
  return `{${values.map(element).join(',')}}`;
}

function element(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (Array.isArray(value)) return postgresArrayLiteral(value);
  // bytea's hex input form, its backslash doubled for the array literal.
  if (Buffer.isBuffer(value)) return `\\\\x${value.toString('hex')}`;
  return quoted(text(value));
}

function text(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function quoted(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}
