import type { IncomingMessage } from 'node:http';

/** Form bodies are small (a thousand seqs at most): anything past this is refused unread. */
const MAX_BODY = 256 * 1024;

export class BodyTooLarge extends Error {}

/** Reads an application/x-www-form-urlencoded body (what forms and htmx send). */
export async function readForm(request: IncomingMessage): Promise<URLSearchParams> {
  const type = String(request.headers['content-type'] ?? '');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new BodyTooLarge(`a form of more than ${MAX_BODY} bytes`);
    chunks.push(chunk);
  }
  if (!/^application\/x-www-form-urlencoded\b/i.test(type)) return new URLSearchParams();
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** A text parameter, undefined when absent or blank. */
export function param(params: URLSearchParams, name: string): string | undefined {
  const value = params.get(name)?.trim();
  return value === undefined || value === '' ? undefined : value;
}
