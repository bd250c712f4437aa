import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FULL_SCAN_AFTER_SHORT_MS, FULL_SCAN_COST_FACTOR, FULL_SCAN_EVERY_MS, seqCursor } from '../../src/dialects/scan-cursor.js';

describe('ScanCursor', () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ['performance'] }));
  afterEach(() => vi.useRealTimers());

  /** One scan: where it starts, then how it went (it takes `ms`). */
  function scan(cursor: ReturnType<typeof seqCursor>, found: number, ms = 0, to?: string) {
    const from = cursor.from();
    vi.advanceTimersByTime(ms);
    if (to !== undefined) cursor.advance(to);
    cursor.scanned(found, 10);
    return from;
  }

  it('goes on from where the last scan left off, and from the beginning once a second', () => {
    const cursor = seqCursor();
    expect(scan(cursor, 10, 0, '100')).toBeNull();
    expect(scan(cursor, 10, 0, '200')).toBe('100');
    vi.advanceTimersByTime(FULL_SCAN_EVERY_MS);
    expect(scan(cursor, 10)).toBeNull();
  });

  it('starts from the beginning soon after a scan that came up short', () => {
    const cursor = seqCursor();
    scan(cursor, 10, 0, '100');
    expect(scan(cursor, 3)).toBe('100');
    vi.advanceTimersByTime(FULL_SCAN_AFTER_SHORT_MS - 1);
    expect(scan(cursor, 3)).toBe('100');
    vi.advanceTimersByTime(1);
    expect(scan(cursor, 3)).toBeNull();
  });

  it('spaces full scans out when one is slow, so they take at most 1/20 of the time', () => {
    const cursor = seqCursor();
    expect(scan(cursor, 3, 200, '100')).toBeNull();
    const wait = 200 * FULL_SCAN_COST_FACTOR;
    vi.advanceTimersByTime(FULL_SCAN_EVERY_MS);
    expect(scan(cursor, 3)).toBe('100');
    vi.advanceTimersByTime(wait - FULL_SCAN_EVERY_MS - 200 - 1);
    expect(scan(cursor, 3)).toBe('100');
    vi.advanceTimersByTime(1);
    // A fast full scan brings the usual intervals back.
    expect(scan(cursor, 3, 1)).toBeNull();
    vi.advanceTimersByTime(FULL_SCAN_AFTER_SHORT_MS);
    expect(scan(cursor, 3)).toBeNull();
  });
});
