/**
 * txoutbox's compiled SQL cut at its placeholders, so an ORM whose raw API wants its own placeholder syntax can be
 * given the same statement: `text[i]` comes before the i-th placeholder, `parameters[i]` is the value bound there
 * (in order of occurrence, repeated where the SQL repeats `$n`), and `text` has one more entry than `parameters`.
 */
export interface SplitSql {
  text: string[];
  parameters: unknown[];
}

const IDENTIFIER_CHAR = /[A-Za-z0-9_$\u0080-\uffff]/;

/**
 * Splits PostgreSQL SQL at its `$n` placeholders. Quoted strings, quoted identifiers, dollar-quoted strings and
 * comments are skipped, so a `$1` inside them stays text (Kysely never puts one there, but a caller's SQL might).
 */
export function splitPostgres(sql: string, parameters: readonly unknown[]): SplitSql {
  const text: string[] = [];
  const bound: unknown[] = [];
  let start = 0;
  let i = 0;
  const skipQuoted = (quote: string, backslashEscapes: boolean) => {
    i++;
    while (i < sql.length) {
      const c = sql[i]!;
      if (backslashEscapes && c === '\\') i += 2;
      else if (c === quote && sql[i + 1] === quote) i += 2;
      else if (c === quote) return void i++;
      else i++;
    }
  };
  while (i < sql.length) {
    const c = sql[i]!;
    const previous = i > 0 ? sql[i - 1]! : ' ';
    if (c === "'") skipQuoted("'", /[eE]/.test(previous) && (i < 2 || !IDENTIFIER_CHAR.test(sql[i - 2]!)));
    else if (c === '"') skipQuoted('"', false);
    else if (c === '-' && sql[i + 1] === '-') i = lineEnd(sql, i);
    else if (c === '/' && sql[i + 1] === '*') i = blockCommentEnd(sql, i);
    else if (c === '$' && !IDENTIFIER_CHAR.test(previous)) {
      const placeholder = /^\$(\d+)/.exec(sql.slice(i));
      const tag = placeholder === null ? /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i)) : null;
      if (placeholder !== null) {
        const index = Number(placeholder[1]) - 1;
        if (index < 0 || index >= parameters.length) {
          throw new RangeError(`SQL refers to $${index + 1} but ${parameters.length} parameter(s) were given`);
        }
        text.push(sql.slice(start, i));
        bound.push(parameters[index]);
        i += placeholder[0].length;
        start = i;
      } else if (tag !== null) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        i = end === -1 ? sql.length : end + tag[0].length;
      } else i++;
    } else i++;
  }
  text.push(sql.slice(start));
  return { text, parameters: bound };
}

/**
 * Splits MySQL SQL at its `?` placeholders the way mysql2 reads them (it binds every `?`, quoted or not, and
 * txoutbox's MySQL SQL has no other `?`).
 */
export function splitMysql(sql: string, parameters: readonly unknown[]): SplitSql {
  const text = sql.split('?');
  if (text.length - 1 !== parameters.length) {
    throw new RangeError(`SQL has ${text.length - 1} placeholder(s) but ${parameters.length} parameter(s) were given`);
  }
  return { text, parameters: [...parameters] };
}

function lineEnd(sql: string, from: number): number {
  const end = sql.indexOf('\n', from);
  return end === -1 ? sql.length : end + 1;
}

/** PostgreSQL block comments nest. */
function blockCommentEnd(sql: string, from: number): number {
  let depth = 0;
  let i = from;
  while (i < sql.length) {
    if (sql[i] === '/' && sql[i + 1] === '*') {
      depth++;
      i += 2;
    } else if (sql[i] === '*' && sql[i + 1] === '/') {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else i++;
  }
  return i;
}
