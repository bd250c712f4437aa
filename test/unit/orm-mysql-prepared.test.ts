import { describe, expect, it } from 'vitest';
import { forPreparedStatements } from '../../src/orm/mysql-prepared.js';

describe('forPreparedStatements (MySQL statements for drivers that send prepared statements)', () => {
  it('drops the introducer before a string parameter and sends the string itself', () => {
    const out = forPreparedStatements('INSERT INTO t (a, b, c) VALUES (_utf8mb4 ?, ?, _utf8mb4 ?)', [
      Buffer.from("O'Brien ✓", 'utf8'),
      Buffer.from([0, 255]),
      Buffer.from('x'),
    ]);
    expect(out.sql).toBe('INSERT INTO t (a, b, c) VALUES (?, ?, ?)');
    expect(out.parameters).toEqual(["O'Brien ✓", Buffer.from([0, 255]), 'x']);
  });

  it('leaves quoted text alone and counts only real placeholders', () => {
    const sql = "SELECT '_utf8mb4 ?', `a?b`, \"it''s ?\", 'x\\'?' , _utf8mb4 ? AS v";
    const out = forPreparedStatements(sql, [Buffer.from('v')]);
    expect(out.sql).toBe("SELECT '_utf8mb4 ?', `a?b`, \"it''s ?\", 'x\\'?' , ? AS v");
    expect(out.parameters).toEqual(['v']);
  });

  it('returns a statement without introducers unchanged', () => {
    const parameters = [1, null, 2n];
    expect(forPreparedStatements('DELETE FROM t WHERE a = ? LIMIT ?', parameters)).toEqual({
      sql: 'DELETE FROM t WHERE a = ? LIMIT ?',
      parameters,
    });
  });
});
