import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LoadedConfig } from '../config.js';
import { openDashboard } from '../dashboard/dashboard.js';
import { CliError, EXIT } from '../errors.js';
import { createLogger } from '../logger.js';

export interface DashboardCommandOptions {
  host?: string;
  port?: string;
  /** Called once the dashboard answers (tests wait for it). */
  onReady?: (info: { url: string }) => void;
}

/**
 * Serves the operator's dashboard alone (no relay) until SIGTERM/SIGINT: on http.host (127.0.0.1 by default) and
 * http.port, or --host/--port, so it can run next to a relay on the same machine.
 */
export async function dashboardCommand(loaded: LoadedConfig, options: DashboardCommandOptions = {}): Promise<void> {
  const { config, redactor } = loaded;
  const log = createLogger(config.log.level, redactor);
  const host = options.host ?? config.http.host;
  const port = options.port === undefined ? config.http.port : Number(options.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new CliError(`--port must be a port number (0 to 65535), got ${options.port}`, EXIT.config);
  }
  const token = config.http.dashboardToken ?? null;
  const dashboard = await openDashboard(loaded, {
    host,
    token,
    onError: (error) => log.warn({ err: error }, 'database connection error (the dashboard retries)'),
  });
  const server = createServer((request, response) => {
    if (dashboard.handle(request, response)) return;
    response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    response.end('not found\n');
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
  } catch (error) {
    await dashboard.close();
    throw new CliError(`Cannot serve the dashboard on ${host}:${port}: ${(error as Error).message}`, EXIT.failure);
  }
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      log.info({ signal }, 'stopping the dashboard');
      server.close();
      server.closeAllConnections();
      void dashboard.close().then(resolve);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  log.info(
    { dashboard: url, writes: token !== null },
    `dashboard on ${url} (${token === null ? 'read-only: set http.dashboardToken to enable retry and discard' : 'write actions need the token'})`,
  );
  options.onReady?.({ url });
  await stopped;
}
