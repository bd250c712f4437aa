import { existsSync } from 'node:fs';
import net from 'node:net';
import type { TestProject } from 'vitest/node';

/**
 * Finds the databases the integration tests use. The URLs come from OUTBOX_PG_URL / OUTBOX_MYSQL_URL, defaulting
 * to the services this machine runs. Only when a URL does not answer and a Docker engine exists are throwaway
 * containers started (testcontainers); otherwise the run stops with a message saying what to start.
 */
const DEFAULTS = {
  pg: process.env.OUTBOX_PG_URL ?? 'postgres://root@127.0.0.1:5432/test',
  mysql: process.env.OUTBOX_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test',
};

function answers(url: string): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port), timeout: 2000 });
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
  });
}

const dockerAvailable = () => existsSync('/var/run/docker.sock') || process.env.DOCKER_HOST !== undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const stops: (() => Promise<unknown>)[] = [];
  let pgUrl = DEFAULTS.pg;
  let mysqlUrl = DEFAULTS.mysql;
  if (!(await answers(pgUrl))) {
    if (!dockerAvailable()) throw new Error(`PostgreSQL does not answer at ${pgUrl}: start it or set OUTBOX_PG_URL.`);
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const container = await new PostgreSqlContainer('postgres:16-alpine').start();
    stops.push(() => container.stop());
    pgUrl = container.getConnectionUri();
  }
  if (!(await answers(mysqlUrl))) {
    if (!dockerAvailable()) throw new Error(`MySQL/MariaDB does not answer at ${mysqlUrl}: start it or set OUTBOX_MYSQL_URL.`);
    const { MariaDbContainer } = await import('@testcontainers/mariadb');
    // Root, because the tests create a database per file.
    const container = await new MariaDbContainer('mariadb:11').withRootPassword('root').start();
    stops.push(() => container.stop());
    mysqlUrl = container.getConnectionUri(true);
  }
  project.provide('pgUrl', pgUrl);
  project.provide('mysqlUrl', mysqlUrl);
  return async () => {
    for (const stop of stops) await stop();
  };
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string;
    mysqlUrl: string;
  }
}
