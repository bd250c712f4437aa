import type { SqlResult } from '../dialects/executor.js';

/** A connection of the `mariadb` connector (Sequelize's and MikroORM's mariadb drivers hold one): query() returns a promise. */
export interface MariadbConnectionLike {
  query(sql: string, values: unknown[]): Promise<unknown>;
}

/**
 * Runs one statement txoutbox compiled for MySQL on a mariadb connector connection. txoutbox sends every string as
 * `_utf8mb4 ?` with a Buffer, counting on the Buffer becoming a hex literal `X'...'` as mysql2 writes it (the one
 * form no SQL mode reads differently); the connector writes `_BINARY '...'` instead, which after an introducer is a
 * syntax error. So Buffers are written into the statement as hex literals here, and the rest go to the connector.
 */
export async function mariadbQuery(
  connection: MariadbConnectionLike,
  sql: string,
  parameters: readonly unknown[],
): Promise<SqlResult> {
  const statement = inlineBuffers(sql, parameters);
  const result = await connection.query(statement.sql, statement.values);
  if (Array.isArray(result)) return { rows: result as Record<string, unknown>[], affectedRows: 0 };
  // The connector reports the count as a bigint or a number, depending on its options.
  return { rows: [], affectedRows: Number((result as { affectedRows?: number | bigint } | null)?.affectedRows ?? 0) };
}

/** Replaces each `?` placeholder (outside quotes and comments) whose value is a Buffer with the Buffer's hex literal. */
export function inlineBuffers(sql: string, parameters: readonly unknown[]): { sql: string; values: unknown[] } {
  if (!parameters.some((value) => Buffer.isBuffer(value))) return { sql, values: [...parameters] };
  const values: unknown[] = [];
  let out = '';
  let from = 0;
  let index = 0;
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i];
    if (c === "'" || c === '"' || c === '`') i = closingQuote(sql, i, c);
    else if ((c === '-' && sql[i + 1] === '-') || c === '#') i = lineEnd(sql, i);
    else if (c === '/' && sql[i + 1] === '*') i = sql.indexOf('*/', i + 2) === -1 ? sql.length : sql.indexOf('*/', i + 2) + 1;
    else if (c === '?') {
      const value = parameters[index++];
      if (Buffer.isBuffer(value)) {
        out += `${sql.slice(from, i)}X'${value.toString('hex')}'`;
        from = i + 1;
      } else values.push(value);
    }
  }
  return { sql: out + sql.slice(from), values };
}

function closingQuote(sql: string, start: number, quote: string): number {
  for (let i = start + 1; i < sql.length; i++) {
    if (sql[i] === '\\' && quote !== '`') i++;
    else if (sql[i] === quote) {
      if (sql[i + 1] !== quote) return i;
      i++; // a doubled quote stands for one
    }
  }
  return sql.length;
}

function lineEnd(sql: string, start: number): number {
  const end = sql.indexOf('\n', start);
  return end === -1 ? sql.length : end;
}
