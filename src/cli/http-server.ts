import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface ReadinessCheck {
  /** A slot check is a table in mode logical: ready while this relay streams one of its slots. */
  kind: 'database' | 'broker' | 'slot';
  name: string;
  check(): Promise<void>;
}

export interface CheckResult {
  kind: ReadinessCheck['kind'];
  name: string;
  ok: boolean;
  error?: string;
}

export interface HealthServerOptions {
  host: string;
  port: number;
  registry: Registry;
  checks: readonly ReadinessCheck[];
  /** Turns an error into text fit to show (redacted). */
  describe: (error: unknown) => string;
  onChecked?: (results: CheckResult[]) => void;
  /** Served first, on the same port (the dashboard): true when it answered the request. */
  handle?: (request: IncomingMessage, response: ServerResponse) => boolean;
}

/**
 * /metrics (Prometheus text), /healthz (the process answers) and /readyz (every database and broker answered just
 * now, and every table in mode logical has a slot this relay streams: 200, else 503 with what failed). Concurrent /readyz requests share one round of checks.
 */
export async function startHealthServer(
  options: HealthServerOptions,
): Promise<{ server: Server; url: string; close(): Promise<void> }> {
  let round: Promise<CheckResult[]> | null = null;
  const checkAll = () => {
    round ??= Promise.all(
      options.checks.map(async (c): Promise<CheckResult> => {
        try {
          await c.check();
          return { kind: c.kind, name: c.name, ok: true };
        } catch (error) {
          return { kind: c.kind, name: c.name, ok: false, error: options.describe(error) };
        }
      }),
    ).finally(() => {
      round = null;
    });
    return round;
  };

  const server = createServer((request, response) => {
    if (options.handle?.(request, response) === true) return;
    const path = (request.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      response.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      response.end(body);
    };
    if (request.method !== 'GET' && request.method !== 'HEAD') return send(405, 'text/plain', 'GET only\n');
    if (path === '/healthz') return send(200, 'text/plain', 'ok\n');
    if (path === '/metrics') {
      options.registry.metrics().then(
        (text) => send(200, options.registry.contentType, text),
        (error: unknown) => send(500, 'text/plain', `${options.describe(error)}\n`),
      );
      return;
    }
    if (path === '/readyz') {
      void checkAll().then((results) => {
        options.onChecked?.(results);
        const ready = results.every((r) => r.ok);
        send(ready ? 200 : 503, 'application/json', `${JSON.stringify({ ready, checks: results })}\n`);
      });
      return;
    }
    send(404, 'text/plain', 'not found: try /metrics, /healthz or /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    server,
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
