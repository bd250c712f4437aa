import { ValidationError } from '../errors.js';

/** Objects and arrays may nest this many levels in a payload; deeper is refused (and would overflow the stack). */
export const MAX_PAYLOAD_DEPTH = 1000;

/**
 * Encodes a payload to the exact bytes that will reach the broker.
 *
 * JSON.stringify quietly turns some values into something else (a function vanishes, NaN, an invalid Date or a
 * sparse array's hole become null, a Map or an ArrayBuffer becomes {}, an undefined property is left out) and throws
 * unhelpfully on others (BigInt, cycles, deep nesting, a throwing toJSON). A message that silently differs from what
 * the caller wrote is worse than an error, so those are refused here with the path to the offending value.
 */
export function encodePayload(payload: unknown, field: string, maxBytes: number): Buffer {
  let bytes: Buffer;
  if (payload instanceof Uint8Array) {
    bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  } else {
    // toJSON is called once, here; the value JSON.stringify then sees has every toJSON result in place.
    const json = jsonValue(payload, '', field, new Set(), 0);
    bytes = Buffer.from(JSON.stringify(json), 'utf8');
  }
  if (bytes.byteLength > maxBytes) {
    throw new ValidationError(field, `is ${bytes.byteLength} bytes, over the ${maxBytes}-byte limit (maxPayloadBytes)`);
  }
  return bytes;
}

/** Objects without a toJSON of their own that JSON.stringify would turn into `{}` without a word. */
function lossyKind(object: object): string | null {
  if (object instanceof Map || object instanceof Set || object instanceof WeakMap || object instanceof WeakSet) {
    return `a ${object.constructor.name}, which JSON would silently turn into {}`;
  }
  if (ArrayBuffer.isView(object) || object instanceof ArrayBuffer) {
    return `a ${object.constructor.name}, which JSON would silently turn into {} (pass bytes as the whole payload, a Uint8Array)`;
  }
  if (typeof SharedArrayBuffer === 'function' && object instanceof SharedArrayBuffer) {
    return 'a SharedArrayBuffer, which JSON would silently turn into {}';
  }
  if (object instanceof Promise) return 'a Promise (await it first), which JSON would silently turn into {}';
  if (object instanceof RegExp) return 'a RegExp, which JSON would silently turn into {}';
  if (object instanceof Error) return 'an Error, which JSON would silently turn into {} (its message is not enumerable)';
  return null;
}

/**
 * Checks that `value` encodes to JSON as it is, and returns what JSON.stringify should encode: `value` itself, or,
 * where a toJSON method chose another form, a copy with that form in place (so toJSON runs exactly once).
 */
function jsonValue(value: unknown, key: string, path: string, ancestors: Set<object>, depth: number): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      if (!Number.isFinite(value)) throw new ValidationError(path, `is ${value}, which JSON cannot represent`);
      return value;
    case 'undefined':
      throw new ValidationError(path, 'is undefined; use null for "no value"');
    case 'bigint':
      throw new ValidationError(path, 'is a BigInt, which JSON cannot represent; convert it to a string');
    case 'function':
      throw new ValidationError(path, 'is a function, which JSON cannot represent');
    case 'symbol':
      throw new ValidationError(path, 'is a symbol, which JSON cannot represent');
  }
  if (value === null) return null;
  const object = value as object;
  if (ancestors.has(object)) throw new ValidationError(path, 'is circular (refers to itself)');
  if (object instanceof Date && Number.isNaN(object.getTime())) {
    throw new ValidationError(path, 'is an invalid Date, which JSON would turn into null');
  }
  const toJSON = (object as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === 'function') {
    // Date and friends choose their own form; that form must encode as it is, like any other value.
    let chosen: unknown;
    try {
      chosen = toJSON.call(object, key);
    } catch (error) {
      throw new ValidationError(path, `has a toJSON() that threw: ${(error as Error)?.message ?? String(error)}`);
    }
    if (chosen === undefined) throw new ValidationError(path, 'has a toJSON() that returned undefined');
    if (typeof chosen === 'object' && chosen !== null && typeof (chosen as { toJSON?: unknown }).toJSON === 'function') {
      throw new ValidationError(path, 'has a toJSON() that returned an object with a toJSON() of its own');
    }
    ancestors.add(object);
    const encoded = jsonValue(chosen, key, path, ancestors, depth);
    ancestors.delete(object);
    return encoded;
  }
  const lossy = lossyKind(object);
  if (lossy !== null) throw new ValidationError(path, `is ${lossy}`);
  if (depth >= MAX_PAYLOAD_DEPTH) {
    throw new ValidationError(path, `nests deeper than ${MAX_PAYLOAD_DEPTH} levels of objects and arrays`);
  }
  ancestors.add(object);
  let copy: unknown = null;
  if (Array.isArray(object)) {
    let items: unknown[] | null = null;
    for (let index = 0; index < object.length; index++) {
      const at = `${path}[${index}]`;
      if (!(index in object)) throw new ValidationError(at, 'is a hole in a sparse array; JSON would turn it into null');
      const item: unknown = object[index];
      if (item === undefined) throw new ValidationError(at, 'is undefined; JSON would turn it into null');
      const encoded = jsonValue(item, String(index), at, ancestors, depth + 1);
      if (encoded !== item) (items ??= [...(object as unknown[])])[index] = encoded;
    }
    copy = items;
  } else {
    let fields: Record<string, unknown> | null = null;
    for (const [name, item] of Object.entries(object)) {
      const at = `${path}.${name}`;
      if (item === undefined) {
        throw new ValidationError(at, 'is undefined; JSON would leave the property out (omit it, or use null)');
      }
      const encoded = jsonValue(item, name, at, ancestors, depth + 1);
      if (encoded !== item) (fields ??= { ...object } as Record<string, unknown>)[name] = encoded;
    }
    copy = fields;
  }
  ancestors.delete(object);
  return copy ?? object;
}
