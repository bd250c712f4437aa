import type { Html } from './html.js';

/** What a route answers: a page, JSON for the chart, or plain text. */
export type Answer = { status: number; page: Html } | { status: number; json: unknown } | { status: number; text: string };

/** A problem to show the operator, with its status code. */
export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    message: string,
  ) {
    super(message);
  }
}

/** Rows per page of a list. */
export const PAGE_SIZE = 50;
/** Rows one confirmation may name and act on. */
export const CONFIRM_LIMIT = 1000;
