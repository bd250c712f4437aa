import { MAX_PAYLOAD_DEPTH } from '../../src/outbox/payload.js';

/** Inputs enqueue must refuse with a typed ValidationError, writing nothing; shared by every transaction kind's tests. */
const circular: Record<string, unknown> = { name: 'loop' };
circular.self = circular;

/** `{ a: { a: … } }`, `depth` objects deep. */
function nested(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = { a: value };
  return value;
}
// eslint-disable-next-line no-sparse-arrays
const sparse = [1, , 3];
const throwingToJson = {
  toJSON() {
    throw new Error('cannot serialize this order');
  },
};

/** [what is wrong, what is passed to enqueue, the field the error must name] */
export const BAD_INPUTS: [string, unknown, string][] = [
  ['not an object', 'hello', 'message'],
  ['an unknown field (a typo of delayMs)', { topic: 't', payload: 1, delay: 5 }, 'delay'],
  ['no topic', { payload: 1 }, 'topic'],
  ['an empty topic', { topic: '', payload: 1 }, 'topic'],
  ['a topic over 255 characters', { topic: 'a'.repeat(256), payload: 1 }, 'topic'],
  ['a topic with a space', { topic: 'orders created', payload: 1 }, 'topic'],
  ['a topic with SQL in it', { topic: "t'; DROP TABLE orders; --", payload: 1 }, 'topic'],
  ['a topic with non-ASCII letters', { topic: 'bestellüngen', payload: 1 }, 'topic'],
  ['a topic that is not a string', { topic: 42, payload: 1 }, 'topic'],
  ['no payload', { topic: 't' }, 'payload'],
  ['an undefined payload', { topic: 't', payload: undefined }, 'payload'],
  ['a function payload', { topic: 't', payload: () => 1 }, 'payload'],
  ['a symbol payload', { topic: 't', payload: Symbol('s') }, 'payload'],
  ['a BigInt payload', { topic: 't', payload: 10n }, 'payload'],
  ['a BigInt deep in the payload', { topic: 't', payload: { order: { total: 10n } } }, 'payload.order.total'],
  ['a circular payload', { topic: 't', payload: circular }, 'payload.self'],
  ['NaN in the payload', { topic: 't', payload: { price: Number.NaN } }, 'payload.price'],
  ['undefined inside an array', { topic: 't', payload: [1, undefined] }, 'payload[1]'],
  ['a Map payload', { topic: 't', payload: new Map([['a', 1]]) }, 'payload'],
  // JSON would silently change these: an ArrayBuffer into {}, an invalid Date and a hole into null, and it would
  // leave an undefined property out.
  ['an ArrayBuffer payload', { topic: 't', payload: new ArrayBuffer(4) }, 'payload'],
  ['an ArrayBuffer in the payload', { topic: 't', payload: { file: new ArrayBuffer(4) } }, 'payload.file'],
  ['an invalid Date in the payload', { topic: 't', payload: { at: new Date('not a date') } }, 'payload.at'],
  ['a hole in a sparse array', { topic: 't', payload: { items: sparse } }, 'payload.items[1]'],
  ['an undefined property', { topic: 't', payload: { a: 1, b: undefined } }, 'payload.b'],
  // Refused where it passes the limit, named by its path: payload.a.a… (MAX_PAYLOAD_DEPTH times .a).
  ['a payload nested 10,000 levels deep', { topic: 't', payload: nested(10_000) }, `payload${'.a'.repeat(MAX_PAYLOAD_DEPTH)}`],
  ['a payload whose toJSON throws', { topic: 't', payload: { order: throwingToJson } }, 'payload.order'],
  ['a toJSON that returns undefined', { topic: 't', payload: { order: { toJSON: () => undefined } } }, 'payload.order'],
  ['a payload over maxPayloadBytes', { topic: 't', payload: 'x'.repeat(1024 * 1024) }, 'payload'],
  ['bytes over maxPayloadBytes', { topic: 't', payload: new Uint8Array(1024 * 1024 + 1) }, 'payload'],
  ['a header with a number value', { topic: 't', payload: 1, headers: { retries: 3 } }, 'headers.retries'],
  ['a header with a null value', { topic: 't', payload: 1, headers: { tenant: null } }, 'headers.tenant'],
  ['a reserved header name', { topic: 't', payload: 1, headers: { 'txoutbox-id': 'x' } }, 'headers.txoutbox-id'],
  ['a reserved header name in other case', { topic: 't', payload: 1, headers: { 'Content-Type': 'x' } }, 'headers.Content-Type'],
  ['a header name with a space', { topic: 't', payload: 1, headers: { 'bad name': 'x' } }, 'headers.bad name'],
  ['headers as an array', { topic: 't', payload: 1, headers: [['a', 'b']] }, 'headers'],
  ['headers over 64 KiB', { topic: 't', payload: 1, headers: { big: 'x'.repeat(70_000) } }, 'headers'],
  ['a key over 255 characters', { topic: 't', payload: 1, key: 'k'.repeat(256) }, 'key'],
  ['an empty key', { topic: 't', payload: 1, key: '' }, 'key'],
  ['a key that is a number', { topic: 't', payload: 1, key: 7 }, 'key'],
  ['a key with a NUL character', { topic: 't', payload: 1, key: 'a\u0000b' }, 'key'],
  ['a key with a newline', { topic: 't', payload: 1, key: 'a\nb' }, 'key'],
  ['an id with a carriage return', { topic: 't', payload: 1, id: 'a\rb' }, 'id'],
  ['a header value with a tab', { topic: 't', payload: 1, headers: { 'x-a': 'a\tb' } }, 'headers.x-a'],
  ['an id with a lone surrogate', { topic: 't', payload: 1, id: 'a\uD800b' }, 'id'],
  ['a header value with trailing white space', { topic: 't', payload: 1, headers: { 'x-a': 'value ' } }, 'headers.x-a'],
  [
    'a header value with a newline (header injection)',
    { topic: 't', payload: 1, headers: { 'x-a': 'ok\r\nx-evil: 1' } },
    'headers.x-a',
  ],
  ['an id over 255 characters', { topic: 't', payload: 1, id: 'i'.repeat(256) }, 'id'],
  ['an empty id', { topic: 't', payload: 1, id: '' }, 'id'],
  ['a null id', { topic: 't', payload: 1, id: null }, 'id'],
  ['an invalid availableAt date', { topic: 't', payload: 1, availableAt: new Date('not a date') }, 'availableAt'],
  ['availableAt as a string', { topic: 't', payload: 1, availableAt: '2030-01-01' }, 'availableAt'],
  ['a negative delayMs', { topic: 't', payload: 1, delayMs: -1 }, 'delayMs'],
  ['both availableAt and delayMs', { topic: 't', payload: 1, delayMs: 5, availableAt: new Date() }, 'availableAt'],
  ['a bad contentType', { topic: 't', payload: 1, contentType: 'json' }, 'contentType'],
  ['an empty batch', [], 'messages'],
  ['a batch over maxBatch (3 here)', Array.from({ length: 4 }, () => ({ topic: 't', payload: 1 })), 'messages'],
  [
    'a bad message after a good one in a batch',
    [
      { topic: 't', payload: 1 },
      { topic: '', payload: 2 },
    ],
    'messages[1].topic',
  ],
];
