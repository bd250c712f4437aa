import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/**
 * Who may do what. Reading needs nothing but reaching the port (bound to 127.0.0.1 by default). Writing (retry,
 * discard, replay, delete) needs the configured token AND a request the browser says comes from the dashboard's own
 * pages, so another site cannot make an operator's browser act (cross-site request forgery), even one that knows
 * the token.
 */

/** The token compared in constant time: digests first, so neither the length nor a prefix leaks through timing. */
export function tokenMatches(expected: string, given: string | undefined): boolean {
  if (given === undefined || given === '') return false;
  const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(expected), digest(given));
}

const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

/**
 * Whether a write comes from the dashboard's own origin. Browsers send Sec-Fetch-Site and Origin with every POST;
 * a request with neither comes from no browser (curl, a script), where forgery is not the danger and the token
 * alone decides.
 */
export function sameOrigin(request: IncomingMessage): boolean {
  const site = first(request.headers['sec-fetch-site']);
  if (site !== undefined && site !== 'same-origin') return false;
  const origin = first(request.headers.origin);
  if (origin === undefined) return true;
  const host = first(request.headers.host);
  return host !== undefined && (origin === `http://${host}` || origin === `https://${host}`);
}

const LOOPBACK_HOST = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])(:\d+)?$/i;

/** Whether `address` (where the server listens) is a loopback address. */
export function isLoopback(address: string): boolean {
  return /^127\./.test(address) || address === '::1' || address === 'localhost';
}

/**
 * A dashboard bound to a loopback address answers only requests addressed to a loopback name: a page of another
 * site whose name was pointed at 127.0.0.1 (DNS rebinding) would otherwise read dead letters as its own origin.
 */
export function hostAllowed(request: IncomingMessage, boundToLoopback: boolean): boolean {
  if (!boundToLoopback) return true;
  const host = first(request.headers.host);
  return host !== undefined && LOOPBACK_HOST.test(host);
}

/** Sent with every answer: scripts and styles only from the sidecar itself, no framing, no type sniffing. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};
