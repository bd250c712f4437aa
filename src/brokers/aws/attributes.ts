import { createHash } from 'node:crypto';
import type { OutgoingMessage } from '../broker.js';
import { OWN_HEADER_PREFIX, txoutboxHeaders, OWN_HEADERS } from '../headers.js';
import { EXTENDED_SIZE_ATTRIBUTES } from './claim-check.js';

/** A message attribute as SQS and SNS take it (the two APIs share the shape). */
export interface AwsAttribute {
  DataType: 'String' | 'Number';
  StringValue: string;
}

/** SQS and SNS carry at most 10 message attributes per message; more is refused by the service or dropped on delivery. */
export const MAX_ATTRIBUTES = 10;

/** The attributes the SQS and SNS adapters set themselves, besides the user's headers. */
export const AWS_ADAPTER_ATTRIBUTES = {
  ...OWN_HEADERS,
  contentType: 'content-type',
  /** Present (value `base64`) only when the payload is not text SQS/SNS can carry, so the body is its base64. */
  bodyEncoding: 'txoutbox-body-encoding',
} as const;

/** Characters an SQS/SNS body or attribute value may hold (XML 1.0's Char production). */
// eslint-disable-next-line no-control-regex
const INVALID_CHARACTER = /[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]/u;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The body that carries `payload` exactly: its text when it is valid UTF-8 the services accept, else its base64. */
export function encodeBody(payload: Buffer): { body: string; base64: boolean } {
  try {
    const text = utf8.decode(payload);
    if (!INVALID_CHARACTER.test(text)) return { body: text, base64: false };
  } catch {
    // Not UTF-8: base64 below.
  }
  return { body: payload.toString('base64'), base64: true };
}

/** The payload bytes a body carries, given its `txoutbox-body-encoding` attribute. */
export function decodeBody(body: string, encoding: string | undefined): Buffer {
  return encoding === 'base64' ? Buffer.from(body, 'base64') : Buffer.from(body, 'utf8');
}

/** Why `name` cannot be a message attribute name, or null (the rules SQS and SNS share). */
function nameProblem(name: string): string | null {
  if (!/^[A-Za-z0-9_.-]{1,256}$/.test(name)) return 'is not an attribute name (1-256 letters, digits, _ - .)';
  if (/^(aws|amazon)\./i.test(name)) return 'starts with AWS. or Amazon., which the service reserves';
  if (name.startsWith('.') || name.endsWith('.') || name.includes('..'))
    return 'starts or ends with a period or has two in a row';
  return null;
}

/**
 * The message's headers and own fields as message attributes, or throws (a permanent refusal) when one cannot travel
 * unchanged or when they exceed the 10-attribute limit: a header is never dropped to make room.
 */
export function buildAttributes(
  message: OutgoingMessage,
  base64Body: boolean,
  extra: Record<string, AwsAttribute> = {},
): Record<string, AwsAttribute> {
  const attributes: Record<string, AwsAttribute> = {};
  const set = (name: string, value: string) => {
    if (value.length === 0) throw new Error(`header ${name} is empty, and SQS/SNS refuse an empty attribute value`);
    if (INVALID_CHARACTER.test(value)) throw new Error(`header ${name} holds characters SQS/SNS cannot carry`);
    attributes[name] = { DataType: 'String', StringValue: value };
  };
  const reserved = new Set([AWS_ADAPTER_ATTRIBUTES.contentType, ...EXTENDED_SIZE_ATTRIBUTES].map((n) => n.toLowerCase()));
  for (const [name, value] of Object.entries(message.headers)) {
    const lower = name.toLowerCase();
    if (lower.startsWith(OWN_HEADER_PREFIX) || reserved.has(lower)) throw new Error(`header ${name} is reserved`);
    const problem = nameProblem(name);
    if (problem !== null) throw new Error(`header ${name} ${problem}`);
    set(name, value);
  }
  for (const [name, value] of Object.entries(txoutboxHeaders(message))) set(name, value);
  set(AWS_ADAPTER_ATTRIBUTES.contentType, message.contentType);
  if (base64Body) set(AWS_ADAPTER_ATTRIBUTES.bodyEncoding, 'base64');
  Object.assign(attributes, extra);
  const count = Object.keys(attributes).length;
  if (count > MAX_ATTRIBUTES) {
    const own = count - Object.keys(message.headers).length;
    throw new Error(
      `the message needs ${count} message attributes (${Object.keys(message.headers).length} headers + ${own} txoutbox sets), ` +
        `but SQS and SNS carry at most ${MAX_ATTRIBUTES}: send at most ${MAX_ATTRIBUTES - own} headers`,
    );
  }
  return attributes;
}

/** The size SQS and SNS count against their limits: the body plus every attribute's name, type and value, in UTF-8. */
export function messageSize(body: string, attributes: Record<string, AwsAttribute>): number {
  let size = Buffer.byteLength(body, 'utf8');
  for (const [name, attribute] of Object.entries(attributes)) {
    size += Buffer.byteLength(name, 'utf8') + attribute.DataType.length + Buffer.byteLength(attribute.StringValue, 'utf8');
  }
  return size;
}

/**
 * `value` as a MessageGroupId or MessageDeduplicationId (at most 128 printable ASCII characters): itself when it is
 * one, else its SHA-256 in hex, so the same key or id always maps to the same group or deduplication id.
 */
export function fifoToken(value: string): string {
  return /^[\x21-\x7e]{1,128}$/.test(value) ? value : createHash('sha256').update(value).digest('hex');
}
