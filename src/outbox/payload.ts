import { ValidationError } from '../errors.js';

/**
 * Encodes a payload to the exact bytes that will reach the broker.
 *
 * JSON.stringify quietly turns some values into something else (a function vanishes, NaN becomes null, a Map
 * becomes {}) and throws unhelpfully on others (BigInt, cycles). A message that silently differs from what the
 * caller wrote is worse than an error, so those are refused here with the path to the offending value.
 */
export function encodePayload(payload: unknown, field: string, maxBytes: number): Buffer {
  let bytes: Buffer;
  if (payload instanceof Uint8Array) {
    bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  } else {
    assertJsonEncodable(payload, field, new Set());
    bytes = Buffer.from(JSON.stringify(payload), 'utf8');
  }
  if (bytes.byteLength > maxBytes) {
    throw new ValidationError(field, `is ${bytes.byteLength} bytes, over the ${maxBytes}-byte limit (maxPayloadBytes)`);
  }
  return bytes;
}

function assertJsonEncodable(value: unknown, path: string, ancestors: Set<object>): void {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new ValidationError(path, `is ${value}, which JSON cannot represent`);
      return;
    case 'undefined':
      throw new ValidationError(path, 'is undefined; use null for "no value"');
    case 'bigint':
      throw new ValidationError(path, 'is a BigInt, which JSON cannot represent; convert it to a string');
    case 'function':
      throw new ValidationError(path, 'is a function, which JSON cannot represent');
    case 'symbol':
      throw new ValidationError(path, 'is a symbol, which JSON cannot represent');
  }
  if (value === null) return;
  const object = value as object;
  if (ancestors.has(object)) throw new ValidationError(path, 'is circular (refers to itself)');
  if (typeof (object as { toJSON?: unknown }).toJSON === 'function') return; // Date and friends choose their own form.
  if (object instanceof Map || object instanceof Set || ArrayBuffer.isView(object)) {
    throw new ValidationError(path, `is a ${object.constructor.name}, which JSON would silently turn into {}`);
  }
  ancestors.add(object);
  if (Array.isArray(object)) {
    object.forEach((item, index) => {
      if (item === undefined) throw new ValidationError(`${path}[${index}]`, 'is undefined; JSON would turn it into null');
      assertJsonEncodable(item, `${path}[${index}]`, ancestors);
    });
  } else {
    for (const [name, item] of Object.entries(object)) {
      // An undefined property is simply absent in JSON, as every JS developer expects; anything else must encode.
      if (item !== undefined) assertJsonEncodable(item, `${path}.${name}`, ancestors);
    }
  }
  ancestors.delete(object);
}
