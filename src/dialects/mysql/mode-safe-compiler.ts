import { MysqlQueryCompiler } from 'kysely';
import { TxOutboxError } from '../../errors.js';

/**
 * Compiles values into forms that no SQL mode can misread.
 *
 * mysql2 interpolates parameters on the client and escapes a quote inside a string with a backslash. Under the
 * `NO_BACKSLASH_ESCAPES` SQL mode the server reads a backslash as an ordinary character, so `\'` ends the literal:
 * a header value like `O'Brien` breaks the statement, and a crafted one injects SQL. A Buffer, by contrast, is sent
 * as a hex literal `X'...'`, which has no escapes at all. So every string value becomes its UTF-8 bytes, sent as a
 * hex literal with the `_utf8mb4` introducer: still a utf8mb4 character string literal (JSON columns accept it,
 * `LOWER` works on it) with a literal's coercibility, so comparisons use the column's collation as before.
 */
export class ModeSafeMysqlQueryCompiler extends MysqlQueryCompiler {
  protected override appendValue(parameter: unknown): void {
    if (typeof parameter === 'string') {
      this.append('_utf8mb4 ');
      super.appendValue(Buffer.from(parameter, 'utf8'));
      return;
    }
    if (!isSafeScalar(parameter)) {
      // Arrays and objects are expanded by mysql2 with the same backslash escaping, so they are refused here.
      throw new TxOutboxError(
        `txoutbox cannot send a ${describe(parameter)} as a MySQL parameter safely under every SQL mode; ` +
          'this is a txoutbox bug, please report it.',
        'TXOUTBOX_UNSAFE_PARAMETER',
      );
    }
    super.appendValue(parameter);
  }
}

function isSafeScalar(value: unknown): boolean {
  return (
    value === null ||
    value === undefined ||
    typeof value === 'number' ||
    typeof value === 'bigint' ||
    typeof value === 'boolean' ||
    Buffer.isBuffer(value) ||
    value instanceof Date
  );
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'array';
  return typeof value === 'object' ? `${(value as object).constructor?.name ?? 'Object'} object` : typeof value;
}
