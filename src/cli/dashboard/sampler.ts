import type { LeaseHolding, TableStatus } from '../../dialects/admin.js';
import type { SlotStatus } from '../../relay/logical/slots.js';
import { setLongInterval, type LongTimer } from '../../timers.js';
import type { OutboxTarget } from '../context.js';
import type { TableLabels } from '../metrics.js';
import { openStatusScans, type StatusScans } from '../status-scans.js';
import { RateHistory, type RateSeries } from './rate-history.js';

/** What the overview shows of one table: its last reading. */
export interface TableReading {
  target: OutboxTarget;
  status: TableStatus | null;
  /** Why the last read failed (redacted), if it did. */
  error: string | null;
  slots: SlotStatus[];
  leases: LeaseHolding[];
  /** Messages published per second since the reading before; null before there are two. */
  publishedPerSecond: number | null;
  /** Local time of the reading. */
  readAt: Date | null;
}

/** A relay instance seen holding leases in the window (an idle relay holds none, so it shows as last seen). */
export interface RelaySeen {
  instance: string;
  /** Per table (`database/schema.table`): messages it holds there now, 0 when it held none at the last reading. */
  held: Record<string, number>;
  leaseUntil: Date | null;
  lastSeen: Date;
}

export interface SamplerOptions {
  intervalMs: number;
  windowMs?: number;
  /** The slots of a table in mode logical (none for a polling one). */
  slotsOf: (target: OutboxTarget) => readonly string[];
  /**
   * Messages this process's relays published to a table so far (the sidecar's counter), when the dashboard runs in
   * the relay; otherwise the rate is counted from the sent rows the relays keep (retainSentMs).
   */
  publishedTotal?: (labels: TableLabels) => number;
  describe: (error: unknown) => string;
}

/** The claim token without its `:nonce:claim` tail: the relay instance (`host:pid:random`). */
export function relayInstanceOf(owner: string): string {
  const parts = owner.split(':');
  return parts.length > 2 ? parts.slice(0, -2).join(':') : owner;
}

export const nameOf = (target: OutboxTarget) => `${target.labels.database}/${target.labels.table}`;

/**
 * Reads every table every few seconds on the status scans' own small pool (never the relays'), one round at a
 * time: the overview renders from the last reading instead of counting a million rows per page view, and the
 * rounds feed the 15-minute chart.
 */
export class DashboardSampler {
  private readonly readings = new Map<OutboxTarget, TableReading>();
  private readonly previous = new Map<OutboxTarget, { at: number; total: number } | { dbNow: Date }>();
  private readonly relays = new Map<string, RelaySeen>();
  private readonly history: RateHistory;
  private scans: StatusScans | null = null;
  private timer: LongTimer | null = null;
  private rates = new Map<string, number | null>();

  constructor(
    private readonly targets: readonly OutboxTarget[],
    private readonly options: SamplerOptions,
  ) {
    this.history = new RateHistory(options.windowMs);
    for (const target of targets) {
      this.readings.set(target, {
        target,
        status: null,
        error: null,
        slots: [],
        leases: [],
        publishedPerSecond: null,
        readAt: null,
      });
    }
  }

  async start(): Promise<void> {
    this.scans = await openStatusScans(
      this.targets,
      async (target, status, admin) => {
        const leases = await admin.leases();
        const reading = this.readings.get(target)!;
        const publishedPerSecond = await this.rate(target, status, admin.sentBetween.bind(admin));
        this.readings.set(target, { ...reading, status, leases, error: null, publishedPerSecond, readAt: new Date() });
        this.rates.set(nameOf(target), publishedPerSecond);
        this.see(target, leases);
      },
      (target, database, error) => {
        for (const reading of this.readings.values()) {
          if (target === null ? reading.target.database.config === database : reading.target === target) {
            this.readings.set(reading.target, { ...reading, error: this.options.describe(error) });
          }
        }
      },
      {
        slotsOf: this.options.slotsOf,
        record: (target, slots) => {
          const reading = this.readings.get(target)!;
          this.readings.set(target, { ...reading, slots });
        },
      },
    );
    await this.round();
    // The sample interval is the user's: long-armed, or a long one would read every millisecond.
    this.timer = setLongInterval(() => void this.round(), this.options.intervalMs).unref();
  }

  /** Reads every table once more now (joins a round in flight). */
  async round(): Promise<void> {
    if (this.scans === null) return;
    this.rates = new Map(this.targets.map((target) => [nameOf(target), null]));
    await this.scans.scan();
    this.history.add(Date.now(), this.rates);
    const horizon = Date.now() - (this.options.windowMs ?? 15 * 60_000);
    for (const [instance, relay] of this.relays) if (relay.lastSeen.getTime() < horizon) this.relays.delete(instance);
  }

  tables(): TableReading[] {
    return this.targets.map((target) => this.readings.get(target)!);
  }

  relaysSeen(): RelaySeen[] {
    return [...this.relays.values()].sort((a, b) => b.lastSeen.getTime() - a.lastSeen.getTime());
  }

  series(): RateSeries {
    return this.history.series();
  }

  async close(): Promise<void> {
    this.timer?.clear();
    await this.scans?.close();
  }

  private async rate(
    target: OutboxTarget,
    status: TableStatus,
    sentBetween: (from: Date, to: Date) => Promise<number>,
  ): Promise<number | null> {
    const before = this.previous.get(target);
    if (this.options.publishedTotal !== undefined) {
      const now = { at: Date.now(), total: this.options.publishedTotal(target.labels) };
      this.previous.set(target, now);
      if (before === undefined || !('total' in before) || now.at <= before.at) return null;
      return ((now.total - before.total) * 1000) / (now.at - before.at);
    }
    // By the database's clock, from one reading to the next: each sent row is counted in exactly one interval.
    this.previous.set(target, { dbNow: status.now });
    if (before === undefined || !('dbNow' in before) || status.now <= before.dbNow) return null;
    const sent = await sentBetween(before.dbNow, status.now);
    return (sent * 1000) / (status.now.getTime() - before.dbNow.getTime());
  }

  private see(target: OutboxTarget, leases: readonly LeaseHolding[]): void {
    const now = new Date();
    const table = nameOf(target);
    for (const relay of this.relays.values()) if (table in relay.held) relay.held[table] = 0;
    for (const lease of leases) {
      const instance = relayInstanceOf(lease.owner);
      const seen = this.relays.get(instance) ?? { instance, held: {}, leaseUntil: null, lastSeen: now };
      seen.held[table] = (seen.held[table] ?? 0) + lease.messages;
      seen.leaseUntil = seen.leaseUntil === null || lease.until > seen.leaseUntil ? lease.until : seen.leaseUntil;
      seen.lastSeen = now;
      this.relays.set(instance, seen);
    }
  }
}
