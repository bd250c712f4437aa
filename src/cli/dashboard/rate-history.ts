/** Published-per-second samples of the last window (15 minutes), per table, in the shape uPlot draws. */
export interface RateSeries {
  /** One name per line of the chart (a table: `database/schema.table`). */
  names: string[];
  /** Unix seconds of each sample. */
  times: number[];
  /** Per name, a value for each time (null where that table had no reading). */
  values: (number | null)[][];
}

/** A ring of samples: each round adds one point for every table, and points older than the window fall out. */
export class RateHistory {
  private readonly points: { at: number; rates: ReadonlyMap<string, number | null> }[] = [];
  private readonly names = new Set<string>();

  constructor(private readonly windowMs = 15 * 60_000) {}

  add(atMs: number, rates: ReadonlyMap<string, number | null>): void {
    for (const name of rates.keys()) this.names.add(name);
    this.points.push({ at: atMs, rates });
    while (this.points.length > 0 && this.points[0]!.at < atMs - this.windowMs) this.points.shift();
  }

  series(): RateSeries {
    const names = [...this.names];
    return {
      names,
      times: this.points.map((p) => p.at / 1000),
      values: names.map((name) => this.points.map((p) => p.rates.get(name) ?? null)),
    };
  }

  /** The latest reading of a table, if any. */
  latest(name: string): number | null {
    return this.points[this.points.length - 1]?.rates.get(name) ?? null;
  }
}
