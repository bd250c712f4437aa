import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/index.js';
import { encodePayload, MAX_PAYLOAD_DEPTH } from '../../src/outbox/payload.js';

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

  // Issue #17: JSON would leave an undefined property out without a word, so it is refused like an undefined item.
  it('refuses undefined properties and undefined array items, naming them', () => {
    expect(() => encode({ a: 1, b: undefined })).toThrow(expect.objectContaining({ field: 'payload.b' }));
    expect(() => encode([1, undefined])).toThrow(ValidationError);
  });

  it('calls toJSON once, with the property name, and holds what it returns to the same rules', () => {
    const calls: string[] = [];
    const money = { toJSON: (key: string) => (calls.push(key), { amount: '9.99', currency: 'EUR' }) };
    expect(encode({ total: money, lines: [money] })).toBe(
      '{"total":{"amount":"9.99","currency":"EUR"},"lines":[{"amount":"9.99","currency":"EUR"}]}',
    );
    expect(calls).toEqual(['total', '0']);
    expect(() => encode({ price: { toJSON: () => Number.NaN } })).toThrow(expect.objectContaining({ field: 'payload.price' }));
    // A Buffer inside a JSON payload keeps the form its own toJSON gives it.
    expect(encode({ b: Buffer.from([1, 2]) })).toBe('{"b":{"type":"Buffer","data":[1,2]}}');
  });

  it('accepts nesting up to MAX_PAYLOAD_DEPTH levels and refuses deeper, naming the path', () => {
    const nested = (depth: number) => {
      let value: unknown = 1;
      for (let i = 0; i < depth; i++) value = [value];
      return value;
    };
    expect(encode(nested(MAX_PAYLOAD_DEPTH), 1 << 20)).toBe(JSON.stringify(nested(MAX_PAYLOAD_DEPTH)));
    expect(() => encode(nested(MAX_PAYLOAD_DEPTH + 1), 1 << 20)).toThrow(
      expect.objectContaining({ field: `payload${'[0]'.repeat(MAX_PAYLOAD_DEPTH)}` }),
    );
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
