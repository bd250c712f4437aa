import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/index.js';
import { encodePayload } from '../../src/outbox/payload.js';

const encode = (value: unknown, max = 1024) => encodePayload(value, 'payload', max).toString('utf8');

describe('payload encoding', () => {
  it('encodes JSON values exactly as JSON.stringify does when nothing would be lost', () => {
    for (const value of [null, 0, -1.5, 'text', true, [], {}, { a: [1, { b: 'c' }] }, 'ünïcødé ☕']) {
      expect(encode(value)).toBe(JSON.stringify(value));
    }
  });

  it('lets objects choose their JSON form with toJSON, as Dates do', () => {
    const at = new Date(Date.UTC(2030, 0, 1));
    expect(encode({ at })).toBe('{"at":"2030-01-01T00:00:00.000Z"}');
  });

  it('leaves out undefined properties as JSON does, but refuses undefined array items', () => {
    expect(encode({ a: 1, b: undefined })).toBe('{"a":1}');
    expect(() => encode([1, undefined])).toThrow(ValidationError);
  });

  it('passes bytes through untouched, honouring the view into a larger buffer', () => {
    const backing = new Uint8Array([9, 1, 2, 3, 9]);
    expect([...encodePayload(backing.subarray(1, 4), 'payload', 10)]).toEqual([1, 2, 3]);
  });

  it('names the path of the offending value', () => {
    expect(() => encode({ order: { lines: [{ price: Infinity }] } })).toThrow(
      expect.objectContaining({ field: 'payload.order.lines[0].price' }),
    );
  });

  it('accepts a shared (non-circular) object referenced twice', () => {
    const shared = { x: 1 };
    expect(encode({ a: shared, b: shared })).toBe('{"a":{"x":1},"b":{"x":1}}');
  });

  it('measures the limit in encoded bytes, not characters', () => {
    expect(() => encodePayload('é'.repeat(6), 'payload', 13)).toThrow(/14 bytes, over the 13-byte limit/);
    expect(encodePayload('é'.repeat(6), 'payload', 14).byteLength).toBe(14);
  });
});
