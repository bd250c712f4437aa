import { defineConfig } from 'vitest/config';

/**
 * Files that stop or restart a shared server (RabbitMQ, NATS, Mosquitto, …) would break the files running next to
 * them, so they form the "serial" project: it starts after every other file has finished and runs one file at a
 * time. Such a file lives under test/integration/brokers/ or is named *.serial.test.ts.
 */
const SERIAL = ['test/integration/brokers/**/*.test.ts', 'test/**/*.serial.test.ts'];

export default defineConfig({
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
