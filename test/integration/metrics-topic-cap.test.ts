import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SidecarMetrics } from '../../src/cli/metrics.js';
import { adminStoreFor } from '../../src/dialects/index.js';
import { tableNames } from '../../src/dialects/identifiers.js';
import { MemoryBroker } from '../../src/index.js';
import { createHarness, type Harness } from '../support/harness.js';
import { drain, testRelay } from '../support/relay-helpers.js';

describe('sidecar metrics with many topics', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness('postgres');
  });
  afterAll(async () => h?.destroy());

  it('keep at most maxTopicsPerTable topic labels per table (declared ones first); the rest count under "_other"', async () => {
    const metrics = new SidecarMetrics({ maxTopicsPerTable: 3 });
    const where = { database: 'main', table: 'txoutbox' };
    metrics.declareTopics(where, ['declared']);
    const relay = testRelay(h, new MemoryBroker());
    metrics.watch(relay, where);
    const topics = ['declared', ...Array.from({ length: 9 }, (_, i) => `t${i}`)];
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(
        trx,
        topics.map((topic, i) => ({ id: `m${i}`, topic, payload: i })),
      ),
    );
    await drain(relay);
    // Backlog gauges of a table with more topics than the cap (the sent ones are gone; these are pending).
    await h.db.transaction().execute((trx) =>
      h.outbox.enqueue(
        trx,
        topics.map((topic, i) => ({ id: `p${i}`, topic, payload: i })),
      ),
    );
    metrics.record(where, await adminStoreFor('postgres', h.db, tableNames('txoutbox', h.schema)).status());

    const series = async (name: string) => (await metrics.registry.getSingleMetric(name)!.get()).values;
    const published = await series('txoutbox_published_total');
    const labels = new Set(published.map((v) => v.labels.topic));
    expect([...labels].sort()).toEqual(['_other', 'declared', 't0', 't1']);
    expect(published.reduce((sum, v) => sum + v.value, 0)).toBe(10);
    expect(published.find((v) => v.labels.topic === '_other')!.value).toBe(7);

    const backlog = await series('txoutbox_backlog_messages');
    expect(new Set(backlog.map((v) => v.labels.topic))).toEqual(labels);
    expect(backlog.find((v) => v.labels.topic === '_other')!.value).toBe(7);
    expect(backlog.reduce((sum, v) => sum + v.value, 0)).toBe(10);
  });
});
