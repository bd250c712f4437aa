import { decodeTime } from 'ulid';
import { describe, expect, it } from 'vitest';
import { createUlidGenerator } from '../../src/outbox/ids.js';

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

describe('createUlidGenerator', () => {
  it('makes valid ULIDs of the current time, strictly increasing across many refills of its random pool', () => {
    const next = createUlidGenerator();
    const before = Date.now();
    const ids = Array.from({ length: 20_000 }, () => next());
    for (const id of ids) expect(id).toMatch(ULID);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    expect(decodeTime(ids[0]!)).toBeGreaterThanOrEqual(before);
    expect(decodeTime(ids.at(-1)!)).toBeLessThanOrEqual(Date.now());
  });

  it('draws the random part evenly from all 32 symbols, and differently in each generator', () => {
    // Each generator's first id carries fresh randomness: 16 symbols, 3,000 generators.
    const firsts = Array.from({ length: 3000 }, () => createUlidGenerator()());
    const counts = new Map<string, number>();
    for (const id of firsts) for (const symbol of id.slice(10)) counts.set(symbol, (counts.get(symbol) ?? 0) + 1);
    expect([...counts.keys()].sort().join('')).toBe(CROCKFORD);
    // 48,000 symbols: 1,500 expected each; a skewed source falls far outside ±20%.
    for (const count of counts.values()) expect(Math.abs(count - 1500)).toBeLessThan(300);
    expect(new Set(firsts.map((id) => id.slice(10))).size).toBe(firsts.length);
  });
});
