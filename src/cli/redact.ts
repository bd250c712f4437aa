/**
 * Secrets never reach a terminal or a log line: every text the CLI prints goes through a Redactor that knows the
 * configuration's secrets (URL passwords, password/secret/token fields) and also masks the password part of any
 * URL it sees, including those inside driver error messages.
 */
const SECRET_FIELD = /pass(word)?|secret|token|credential|api[-_]?key|sasl/i;
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s:@/]*):([^\s@/]+)@/gi;
export const MASK = '***';

/** `postgres://user:pw@host/db` → `postgres://user:***@host/db`; anything else is returned unchanged. */
export function redactUrl(url: string): string {
  return url.replace(URL_USERINFO, (_all, scheme: string, user: string) => `${scheme}${user}:${MASK}@`);
}

export class Redactor {
  private readonly secrets: string[];

  constructor(secrets: Iterable<string> = []) {
    // Longest first, so a secret that contains another is masked whole.
    this.secrets = [...new Set([...secrets].filter((s) => s.length >= 3))].sort((a, b) => b.length - a.length);
  }

  /** Collects secrets from a parsed configuration: URL passwords anywhere, and values of secret-looking fields. */
  static fromConfig(config: unknown): Redactor {
    const found: string[] = [];
    const visit = (value: unknown, field: string) => {
      if (typeof value === 'string') {
        if (SECRET_FIELD.test(field)) found.push(value);
        for (const match of value.matchAll(URL_USERINFO)) {
          const password = match[3];
          if (password !== undefined) {
            found.push(password);
            try {
              found.push(decodeURIComponent(password));
            } catch {
              // not percent-encoded: the raw form is enough
            }
          }
        }
      } else if (Array.isArray(value)) {
        value.forEach((item) => visit(item, field));
      } else if (typeof value === 'object' && value !== null) {
        for (const [key, item] of Object.entries(value)) visit(item, SECRET_FIELD.test(field) ? field : key);
      }
    };
    visit(config, '');
    return new Redactor(found);
  }

  text(input: string): string {
    let output = redactUrl(input);
    for (const secret of this.secrets) output = output.split(secret).join(MASK);
    return output;
  }

  error(error: unknown): string {
    if (error instanceof AggregateError && error.errors.length > 0) {
      return this.text(error.errors.map((e) => (e instanceof Error ? e.message : String(e))).join('; '));
    }
    return this.text(error instanceof Error ? error.message || error.name : String(error));
  }
}
