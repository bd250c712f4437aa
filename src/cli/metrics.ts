import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { OutgoingMessage } from '../brokers/broker.js';
import type { BrokerDecorator } from '../brokers/decorator.js';
import { timePublishes } from '../brokers/timing.js';
import type { TableStatus } from '../dialects/admin.js';
import type { LogicalRelay, LogicalRelayStatus } from '../relay/logical/logical-relay.js';
import type { SlotStatus } from '../relay/logical/slots.js';
import type { Relay } from '../relay/relay.js';

/** Labels that say where a message lives. */
export interface TableLabels {
  database: string;
  table: string;
}

/** One slot of a table in mode logical, as this relay sees it. */
export type SlotPartition = LogicalRelayStatus['partitions'][number];

/** The topic label of every topic past a table's cap. */
export const OTHER_TOPICS = '_other';
export const DEFAULT_MAX_TOPICS_PER_TABLE = 100;

export interface SidecarMetricsOptions {
  /**
   * Distinct topic labels per table (declared topics first, then in the order they are seen); later topics are
   * counted under `_other`, so the series do not grow with every topic ever seen. Default 100.
   */
  maxTopicsPerTable?: number;
}

/** The sidecar's Prometheus metrics, in a registry of its own. */
export class SidecarMetrics {
  readonly registry = new Registry();
  private readonly labels = ['database', 'table', 'topic'] as const;
  readonly enqueued = new Counter({
    name: 'txoutbox_enqueued_total',
    help: 'Committed messages this relay took up for the first time (their first publish attempt); those not yet taken up are in txoutbox_backlog_messages',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly published = new Counter({
    name: 'txoutbox_published_total',
    help: 'Messages the broker acknowledged (persisted) and the relay marked sent',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly failed = new Counter({
    name: 'txoutbox_failed_total',
    help: 'Failed publish attempts that will be retried after a backoff',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly dead = new Counter({
    name: 'txoutbox_dead_total',
    help: 'Messages dead-lettered (permanent failure or retry budget spent)',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'txoutbox_publish_latency_seconds',
    help: "Time from a message's commit to the broker's acknowledgement",
    labelNames: this.labels,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly brokerDuration = new Histogram({
    name: 'txoutbox_broker_publish_duration_seconds',
    help: 'Time one publish call (a batch) waited for its broker',
    labelNames: ['database', 'table'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly backlog = new Gauge({
    name: 'txoutbox_backlog_messages',
    help: 'Unsent messages in the table (in flight included), read every metrics.backlogIntervalMs',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly oldestAge = new Gauge({
    name: 'txoutbox_oldest_pending_age_seconds',
    help: 'Age of the oldest unsent message (0 when none)',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: 'txoutbox_in_flight_messages',
    help: 'Messages claimed by a relay whose lease has not run out',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly deadLetters = new Gauge({
    name: 'txoutbox_dead_letters',
    help: 'Dead letters waiting for a person (txoutbox dead list)',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly expiredLeases = new Gauge({
    name: 'txoutbox_expired_leases',
    help: 'Claimed messages whose lease ran out (their relay died or stalled) and that another relay will take over',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly takeovers = new Counter({
    name: 'txoutbox_lease_takeovers_total',
    help: 'Expired leases seen by the backlog reader: each is a message taken over from a relay that died or stalled',
    labelNames: this.labels,
    registers: [this.registry],
  });
  readonly up = new Gauge({
    name: 'txoutbox_ready',
    help: '1 when the dependency answered the last readiness check, else 0',
    labelNames: ['kind', 'name'] as const,
    registers: [this.registry],
  });
  private readonly slotLabels = ['database', 'table', 'slot'] as const;
  readonly slotLagBytes = new Gauge({
    name: 'txoutbox_slot_lag_bytes',
    help: 'Logical mode: WAL written since the position confirmed on the slot (at most what is left to relay)',
    labelNames: this.slotLabels,
    registers: [this.registry],
  });
  readonly slotLagSeconds = new Gauge({
    name: 'txoutbox_slot_lag_seconds',
    help: 'Logical mode: age of the oldest commit this relay streamed from the slot and has not confirmed (0 when none)',
    labelNames: this.slotLabels,
    registers: [this.registry],
  });
  readonly slotRetainedWal = new Gauge({
    name: 'txoutbox_slot_retained_wal_bytes',
    help: 'Logical mode: WAL the server keeps for the slot; it grows while no relay streams from it',
    labelNames: this.slotLabels,
    registers: [this.registry],
  });
  readonly streamed = new Counter({
    name: 'txoutbox_messages_streamed_total',
    help: "Logical mode: rows this relay took from the slot's stream (rows read by the backfill are not counted)",
    labelNames: this.slotLabels,
    registers: [this.registry],
  });
  private readonly seenStreamed = new Map<string, number>();
  private readonly seenTopics = new Map<string, Set<string>>();
  private readonly seenExpired = new Map<string, number>();
  /** Per table: the topics that have a label of their own. */
  private readonly labelled = new Map<string, Set<string>>();
  private readonly maxTopicsPerTable: number;

  constructor(options: SidecarMetricsOptions = {}) {
    this.maxTopicsPerTable = options.maxTopicsPerTable ?? DEFAULT_MAX_TOPICS_PER_TABLE;
    collectDefaultMetrics({ register: this.registry });
  }

  /** The topic label for a topic of a table: the topic itself while the table is under its cap, else `_other`. */
  private topicLabel(where: TableLabels, topic: string): string {
    const id = `${where.database}\u0000${where.table}`;
    let topics = this.labelled.get(id);
    if (topics === undefined) this.labelled.set(id, (topics = new Set()));
    if (topics.has(topic)) return topic;
    if (topics.size >= this.maxTopicsPerTable) return OTHER_TOPICS;
    topics.add(topic);
    return topic;
  }

  /** Published messages per table (`database\0table`), as a plain number the dashboard can read at any moment. */
  private readonly publishedByTable = new Map<string, number>();

  /** Messages this process published to a table so far (txoutbox_published_total summed over its topics). */
  publishedTotal(where: TableLabels): number {
    return this.publishedByTable.get(`${where.database}\u0000${where.table}`) ?? 0;
  }

  /** Counts what a relay reports through its events. */
  watch(relay: Relay | LogicalRelay, where: TableLabels): void {
    const table = `${where.database}\u0000${where.table}`;
    const at = (message: OutgoingMessage) => ({ ...where, topic: this.topicLabel(where, message.topic) });
    const first = (message: OutgoingMessage) => {
      if (message.attempt === 1) this.enqueued.inc(at(message));
    };
    relay.on('published', (messages) => {
      const now = Date.now();
      this.publishedByTable.set(table, (this.publishedByTable.get(table) ?? 0) + messages.length);
      for (const message of messages) {
        first(message);
        this.published.inc(at(message));
        this.latency.observe(at(message), Math.max(0, (now - message.createdAt.getTime()) / 1000));
      }
    });
    relay.on('retrying', (messages) => {
      for (const { message } of messages) {
        first(message);
        this.failed.inc(at(message));
      }
    });
    relay.on('dead', (messages) => {
      for (const { message } of messages) {
        first(message);
        this.dead.inc(at(message));
      }
    });
  }

  /** Times each publish call of the broker a relay uses, as txoutbox_broker_publish_duration_seconds. */
  publishTiming(where: TableLabels): BrokerDecorator {
    return timePublishes((seconds) => this.brokerDuration.observe(where, seconds));
  }

  /**
   * Sets a slot's gauges: lag and retained WAL from the server (`server`; null when it could not be read, and 0 when
   * the slot is missing), lag seconds and rows streamed from this relay's own view of it.
   */
  recordSlot(where: TableLabels, partition: SlotPartition, server: SlotStatus | null, now = Date.now()): void {
    const labels = { ...where, slot: partition.slot };
    if (server !== null) {
      this.slotLagBytes.set(labels, server.lagBytes ?? 0);
      this.slotRetainedWal.set(labels, server.retainedBytes ?? 0);
    }
    const oldest = partition.oldestUnconfirmedCommit;
    this.slotLagSeconds.set(labels, oldest === null ? 0 : Math.max(0, (now - oldest.getTime()) / 1000));
    // The relay counts rows since it started; the counter grows by what came since the last read.
    const key = `${where.database}\u0000${where.table}\u0000${partition.slot}`;
    const before = this.seenStreamed.get(key) ?? 0;
    this.streamed.inc(labels, Math.max(0, partition.streamed - before));
    this.seenStreamed.set(key, Math.max(before, partition.streamed));
  }

  /** Declares topics a table is known to carry, so their series exist (at 0) before the first message. */
  declareTopics(where: TableLabels, topics: readonly string[]): void {
    for (const topic of new Set(topics.map((t) => this.topicLabel(where, t)))) {
      const labels = { ...where, topic };
      for (const counter of [this.enqueued, this.published, this.failed, this.dead]) counter.inc(labels, 0);
      for (const gauge of [this.backlog, this.oldestAge, this.inFlight, this.deadLetters, this.expiredLeases])
        gauge.set(labels, 0);
    }
  }

  /** Sets the table gauges from a status read; topics that disappeared go back to 0. */
  record(where: TableLabels, status: TableStatus): void {
    const id = `${where.database}\u0000${where.table}`;
    const seen = this.seenTopics.get(id) ?? new Set<string>();
    this.seenTopics.set(id, seen);
    // Topics past the cap are summed into one `_other` series.
    const byLabel = new Map<
      string,
      { pending: number; oldest: Date | null; inFlight: number; dead: number; expiredLeases: number }
    >();
    for (const t of status.topics) {
      const label = this.topicLabel(where, t.topic);
      const sum = byLabel.get(label) ?? { pending: 0, oldest: null, inFlight: 0, dead: 0, expiredLeases: 0 };
      sum.pending += t.pending;
      if (t.oldestPendingAt !== null && (sum.oldest === null || t.oldestPendingAt < sum.oldest)) sum.oldest = t.oldestPendingAt;
      sum.inFlight += t.inFlight;
      sum.dead += t.dead;
      sum.expiredLeases += t.expiredLeases;
      byLabel.set(label, sum);
    }
    for (const topic of seen) if (!byLabel.has(topic)) this.declareTopics(where, [topic]);
    for (const [topic, t] of byLabel) {
      seen.add(topic);
      const labels = { ...where, topic };
      this.backlog.set(labels, t.pending);
      this.oldestAge.set(labels, t.oldest === null ? 0 : Math.max(0, (status.now.getTime() - t.oldest.getTime()) / 1000));
      this.inFlight.set(labels, t.inFlight);
      this.deadLetters.set(labels, t.dead);
      this.expiredLeases.set(labels, t.expiredLeases);
      // A takeover is counted when the number of expired leases rises between reads.
      const key = `${id}\u0000${topic}`;
      const before = this.seenExpired.get(key) ?? 0;
      if (t.expiredLeases > before) this.takeovers.inc(labels, t.expiredLeases - before);
      this.seenExpired.set(key, t.expiredLeases);
    }
  }
}
