/**
 * Secrets never reach a terminal or a log line: every text the CLI prints goes through a Redactor that knows the
 * configuration's secrets (URL passwords, password/secret/token fields) and also masks the password part of any
 * URL it sees, including those inside driver error messages.
 */
const SECRET_FIELD = /pass(word)?|secret|token|credential|api[-_]?key|sasl/i;
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s:@/]*):([^\s@/]+)@/gi;
/** A query parameter whose name looks secret (`?password=`, `&sslpassword=`, `&token=`, `&api_key=`): name, value. */
const SECRET_QUERY_PARAM =
  /([?&;][^=&;#\s]*(?:pass(?:word)?|secret|token|credential|api[-_]?key|sasl)[^=&;#\s]*=)([^&;#\s'"]+)/gi;
export const MASK = '***';

/** Whether a configuration field's name says it holds a secret (password, token, apiKey, ...). */
export function isSecretField(field: string): boolean {
  return SECRET_FIELD.test(field);
}

/**
 * `postgres://user:pw@host/db?sslpassword=x` → `postgres://user:***@host/db?sslpassword=***`: the password of any
 * URL, and every secret-looking query parameter; anything else is returned unchanged.
 */
export function redactUrl(url: string): string {
  return url
    .replace(URL_USERINFO, (_all, scheme: string, user: string) => `${scheme}${user}:${MASK}@`)
    .replace(SECRET_QUERY_PARAM, (_all, name: string) => `${name}${MASK}`);
}

/** A secret as written and, when it is percent-encoded, as decoded (drivers print either). */
function withDecoded(secret: string): string[] {
  try {
    return [secret, decodeURIComponent(secret.replace(/\+/g, ' ')), decodeURIComponent(secret)];
  } catch {
    return [secret];
  }
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
      if (typeof value === 'number' && SECRET_FIELD.test(field)) {
        found.push(String(value));
      } else if (typeof value === 'string') {
        if (SECRET_FIELD.test(field)) found.push(value);
        for (const match of value.matchAll(URL_USERINFO)) if (match[3] !== undefined) found.push(...withDecoded(match[3]));
        for (const match of value.matchAll(SECRET_QUERY_PARAM)) if (match[2] !== undefined) found.push(...withDecoded(match[2]));
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
