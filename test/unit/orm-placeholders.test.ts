import { describe, expect, it } from 'vitest';
import { postgresArrayLiteral } from '../../src/orm/pg-array.js';
import { splitMysql, splitPostgres } from '../../src/orm/placeholders.js';

describe('splitPostgres', () => {
  it('cuts at $n in order of occurrence, repeating and reordering parameters as the SQL does', () => {
    expect(splitPostgres('SELECT $2, $1, $2::int', ['a', 'b'])).toEqual({
      text: ['SELECT ', ', ', ', ', '::int'],
      parameters: ['b', 'a', 'b'],
    });
  });

  it('leaves $n inside strings, quoted identifiers, dollar quotes and comments alone', () => {
    const sql = `SELECT '$1 it''s', E'\\' $1', "a$1""", $x$ $1 $x$, $$ $1 $$, a$1 -- $1\n /* $1 /* $1 */ */ $1`;
    const { text, parameters } = splitPostgres(sql, ['v']);
    expect(parameters).toEqual(['v']);
    expect(text).toEqual([sql.slice(0, -2), '']);
  });

  it('refuses a placeholder with no parameter', () => {
    expect(() => splitPostgres('SELECT $2', ['a'])).toThrow(RangeError);
  });
});

describe('splitMysql', () => {
  it('cuts at every ?', () => {
    expect(splitMysql('INSERT INTO t VALUES (?, ?)', [1, 2])).toEqual({
      text: ['INSERT INTO t VALUES (', ', ', ')'],
      parameters: [1, 2],
    });
    expect(() => splitMysql('SELECT ?', [])).toThrow(RangeError);
  });
});

describe('postgresArrayLiteral', () => {
  it('writes arrays as node-postgres does: quoted, escaped, NULLs bare, bytes in hex', () => {
    expect(
      postgresArrayLiteral([
        'a',
        'say "hi" \\ bye',
        null,
        Buffer.from([0, 255]),
        5n,
        true,
        new Date(Date.UTC(2026, 0, 2)),
        ['x'],
      ]),
    ).toBe(String.raw`{"a","say \"hi\" \\ bye",NULL,\\x00ff,"5","true","2026-01-02T00:00:00.000Z",{"x"}}`);
  });
});
