import * as kysely from 'kysely';
import { describe, expect, it } from 'vitest';

/**
 * Which kysely the suite runs on: TXOUTBOX_KYSELY=0.28 (CI's Node 22 run) must really load the peer range's lowest,
 * the default the highest. 0.29 moved Migrator to `kysely/migration`, so the root export tells them apart.
 */
describe('the kysely under test', () => {
  it('is the one the run asked for', () => {
    const lowest = process.env.TXOUTBOX_KYSELY === '0.28';
    expect(typeof (kysely as Record<string, unknown>).Migrator).toBe(lowest ? 'function' : 'undefined');
  });
});
