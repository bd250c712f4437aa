/**
 * txoutbox compiles MySQL statements for drivers that interpolate parameters on the client (mysql2's `query`): each
 * string goes as `_utf8mb4 ?` with its UTF-8 bytes, which such a driver writes as the hex literal `_utf8mb4 X'..'`,
 * safe under every SQL mode. A driver that sends server-side prepared statements (the binary protocol: the mariadb
 * driver's `execute`, which Prisma's MariaDB adapter uses) cannot put a parameter after a charset introducer, and
 * needs none: its parameters are never escaped. For those the introducer goes and the bytes become the string again.
 */
const INTRODUCER = '_utf8mb4 ';

export function forPreparedStatements(sql: string, parameters: readonly unknown[]): { sql: string; parameters: unknown[] } {
  if (!sql.includes(INTRODUCER)) return { sql, parameters: [...parameters] };
  const values = [...parameters];
  let out = '';
  let index = 0;
  for (let i = 0; i < sql.length; i++) {
    const char = sql[i]!;
    if (char === "'" || char === '"' || char === '`') {
      // A quoted literal or identifier: copied whole (a doubled or backslashed quote stays inside it).
      let end = i + 1;
      while (end < sql.length) {
        if (sql[end] === '\\' && char !== '`') end += 2;
        else if (sql[end] !== char) end++;
        else if (sql[end + 1] === char) end += 2;
        else break;
      }
      out += sql.slice(i, end + 1);
      i = end;
      continue;
    }
    if (char === '?') {
      const value = values[index];
      if (out.endsWith(INTRODUCER) && Buffer.isBuffer(value)) {
        out = out.slice(0, -INTRODUCER.length);
        values[index] = value.toString('utf8');
      }
      index++;
    }
    out += char;
  }
  return { sql: out, parameters: values };
}
