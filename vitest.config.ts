import { defineConfig } from 'vitest/config';

/**
 * Files that stop or restart a shared server (RabbitMQ, NATS, Mosquitto, …) would break the files running next to
 * them, so they form the "serial" project: it starts after every other file has finished and runs one file at a
 * time. Such a file lives under test/integration/brokers/ or is named *.serial.test.ts.
 */
const SERIAL = ['test/integration/brokers/**/*.test.ts', 'test/**/*.serial.test.ts'];

/**
 * TXOUTBOX_KYSELY=0.28 runs the suite against the lowest kysely of the peer range (installed as `kysely-0.28`);
 * otherwise the tests use the highest, the `kysely` devDependency.
 */
const kyselyAlias =
  process.env.TXOUTBOX_KYSELY === '0.28' ? [{ find: /^kysely(\/.*)?$/, replacement: 'kysely-0.28$1' }] : [];

export default defineConfig({
  resolve: { alias: kyselyAlias },
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    reporters: ['default', './test/support/summary-reporter.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: 'parallel', include: ['test/**/*.test.ts'], exclude: SERIAL, sequence: { groupOrder: 0 } } },
      { extends: true, test: { name: 'serial', include: SERIAL, fileParallelism: false, sequence: { groupOrder: 1 } } },
    ],
  },
});
