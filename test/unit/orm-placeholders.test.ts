import { describe, expect, it } from 'vitest';
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
