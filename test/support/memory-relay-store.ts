import type { ClaimedMessage, ClaimLimits, Completion, DeadLetter, RelayStore, RetryPlan } from '../../src/dialects/dialect.js';

/** One outbox row as the in-memory store keeps it. */
export interface MemoryRow {
  seq: number;
  id: string;
  key: string | null;
  state: 'pending' | 'dead';
  /** Heads its key (or keyless); false: waits behind the head. */
  ready: boolean;
  attempts: number;
  dueAt: number;
  leaseOwner: string | null;
  lastError: string | null;
}

/**
 * The relay's store in memory, for fast tests of the relay's loop (settle, backoff, deadlines, crash handling,
 * stop). It keeps the same rules as the SQL stores: only due heads are claimed, every change checks the claim
 * token, and a key's next message becomes its head when the head is sent (or dead under 'skip').
 */
export class MemoryRelayStore implements RelayStore {
  readonly rows: MemoryRow[] = [];
  private next = 1;
  /** Set to make every call of that method wait until the promise settles (a stalled database). */
  stall: Partial<Record<keyof RelayStore, Promise<void>>> = {};

  constructor(private readonly now: () => number = Date.now) {}

  add(id: string, key: string | null = null): void {
    const headless = key === null || !this.rows.some((r) => r.key === key && (r.state === 'pending' || r.ready));
    this.rows.push({
      seq: this.next++,
      id,
      key,
      state: 'pending',
      ready: headless,
      attempts: 0,
      dueAt: 0,
      leaseOwner: null,
      lastError: null,
    });
  }

  row(id: string): MemoryRow | undefined {
    return this.rows.find((r) => r.id === id);
  }

  async claim(limits: ClaimLimits, token: string, leaseMs: number): Promise<ClaimedMessage[]> {
    await this.stall.claim;
    const due = this.rows.filter((r) => r.state === 'pending' && r.ready && r.dueAt <= this.now()).slice(0, limits.count);
    return due.map((r) => {
      const takenOverFrom = r.leaseOwner;
      r.leaseOwner = token;
      r.dueAt = this.now() + leaseMs;
      r.attempts++;
      return this.message(r, takenOverFrom);
    });
  }

  async complete(messages: readonly ClaimedMessage[], token: string): Promise<Completion> {
    await this.stall.complete;
    const sent = messages.filter((m) => this.ours(m, token));
    let promoted = 0;
    for (const m of sent) {
      this.rows.splice(this.rows.indexOf(this.bySeq(m)!), 1);
      promoted += this.promote(m.key);
    }
    return { sent, promoted };
  }

  async retry(plans: readonly RetryPlan[], token: string): Promise<void> {
    await this.stall.retry;
    for (const { message, error, delayMs } of plans) {
      if (!this.ours(message, token)) continue;
      const row = this.bySeq(message)!;
      Object.assign(row, { dueAt: this.now() + delayMs, lastError: error, leaseOwner: null });
    }
  }

  async bury(letters: readonly DeadLetter[], token: string, releaseKey: boolean): Promise<number> {
    await this.stall.bury;
    let promoted = 0;
    for (const { message, error } of letters) {
      if (!this.ours(message, token)) continue;
      const row = this.bySeq(message)!;
      Object.assign(row, { state: 'dead', lastError: error, ready: releaseKey ? row.key === null : row.ready });
      if (releaseKey) promoted += this.promote(row.key);
    }
    return promoted;
  }

  async release(messages: readonly ClaimedMessage[], token: string): Promise<void> {
    await this.stall.release;
    for (const m of messages) {
      if (!this.ours(m, token)) continue;
      const row = this.bySeq(m)!;
      Object.assign(row, { dueAt: this.now(), leaseOwner: null, attempts: Math.max(row.attempts - 1, 0) });
    }
  }

  async handOver(message: ClaimedMessage, from: string, to: string, leaseMs: number): Promise<boolean> {
    await this.stall.handOver;
    if (!this.ours(message, from)) return false;
    Object.assign(this.bySeq(message)!, { leaseOwner: to, dueAt: this.now() + leaseMs });
    return true;
  }

  async renew(messages: readonly ClaimedMessage[], token: string, leaseMs: number): Promise<void> {
    await this.stall.renew;
    for (const m of messages) if (this.ours(m, token)) this.bySeq(m)!.dueAt = this.now() + leaseMs;
  }

  async cleanup(): Promise<number> {
    await this.stall.cleanup;
    return 0;
  }

  private ours(message: ClaimedMessage, token: string): boolean {
    const row = this.bySeq(message);
    return row !== undefined && row.state === 'pending' && row.leaseOwner === token;
  }

  private bySeq(message: ClaimedMessage): MemoryRow | undefined {
    return this.rows.find((r) => String(r.seq) === message.seq);
  }

  private promote(key: string | null): number {
    if (key === null || this.rows.some((r) => r.key === key && r.ready)) return 0;
    const next = this.rows.find((r) => r.key === key && r.state === 'pending');
    if (next === undefined) return 0;
    next.ready = true;
    return 1;
  }

  private message(row: MemoryRow, takenOverFrom: string | null): ClaimedMessage {
    return {
      seq: String(row.seq),
      id: row.id,
      topic: 't',
      key: row.key,
      payload: Buffer.from(row.id),
      contentType: 'text/plain',
      headers: {},
      attempts: row.attempts,
      createdAt: new Date(0),
      takenOverFrom,
    };
  }
}
