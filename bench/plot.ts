import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A small hand-written SVG line chart, enough for the benches' plots (latency CDFs, throughput vs relay count)
 * without a plotting dependency. Plots are written under bench/results/ so BENCHMARKS.md can link them.
 */

export interface Series {
  name: string;
  points: readonly (readonly [number, number])[];
  /** Draw a line through the points (default true). */
  line?: boolean;
  /** Draw a dot on every point (default false). */
  markers?: boolean;
  dashed?: boolean;
  /** Defaults to the palette, by series index. */
  color?: string;
}

export interface ChartOptions {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  /** A logarithmic x axis (all x > 0), for latency distributions with long tails. */
  xLog?: boolean;
  xMin?: number;
  xMax?: number;
  yMin?: number;
  yMax?: number;
  /** Ticks to use instead of the computed ones. */
  xTicks?: readonly number[];
  /** Where the legend goes, inside the plot (default top left; a CDF's empty corner is the bottom right). */
  legend?: 'top-left' | 'bottom-right';
  /** Dotted horizontal reference lines, e.g. p50 and p99 of a CDF. */
  yGuides?: readonly { y: number; label: string }[];
  width?: number;
  height?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
const MARGIN = { top: 56, right: 24, bottom: 56, left: 76 };

export function lineChart(options: ChartOptions): string {
  const width = options.width ?? 760;
  const height = options.height ?? 440;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const all = options.series.flatMap((s) => s.points);
  const xs = all.map(([x]) => x).filter((x) => !options.xLog || x > 0);
  const ys = all.map(([, y]) => y);
  const xMin = options.xMin ?? Math.min(...xs);
  const xMax = options.xMax ?? Math.max(...xs);
  const yMin = options.yMin ?? Math.min(0, ...ys);
  const yMax = options.yMax ?? niceCeil(Math.max(...ys) * 1.05);
  const toX = options.xLog
    ? (x: number) => MARGIN.left + ((Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin) || 1)) * plotW
    : (x: number) => MARGIN.left + ((x - xMin) / (xMax - xMin || 1)) * plotW;
  const toY = (y: number) => MARGIN.top + plotH - ((y - yMin) / (yMax - yMin || 1)) * plotH;
  const xTicks = options.xTicks ?? (options.xLog ? logTicks(xMin, xMax) : linearTicks(xMin, xMax));
  const yTicks = linearTicks(yMin, yMax);

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${MARGIN.left}" y="22" font-size="15" font-weight="bold">${escape(options.title)}</text>`,
  ];
  if (options.subtitle !== undefined) {
    parts.push(`<text x="${MARGIN.left}" y="40" fill="#555555">${escape(options.subtitle)}</text>`);
  }
  for (const tick of yTicks) {
    const y = fixed(toY(tick));
    parts.push(
      `<line x1="${MARGIN.left}" y1="${y}" x2="${MARGIN.left + plotW}" y2="${y}" stroke="#e5e5e5"/>`,
      `<text x="${MARGIN.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${label(tick)}</text>`,
    );
  }
  for (const tick of xTicks) {
    if (tick < xMin || tick > xMax) continue;
    const x = fixed(toX(tick));
    parts.push(
      `<line x1="${x}" y1="${MARGIN.top}" x2="${x}" y2="${MARGIN.top + plotH}" stroke="#f0f0f0"/>`,
      `<text x="${x}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${label(tick)}</text>`,
    );
  }
  for (const guide of options.yGuides ?? []) {
    const y = fixed(toY(guide.y));
    parts.push(
      `<line x1="${MARGIN.left}" y1="${y}" x2="${MARGIN.left + plotW}" y2="${y}" stroke="#999999" stroke-dasharray="2 3"/>`,
      `<text x="${MARGIN.left + 4}" y="${fixed(toY(guide.y) - 4)}" fill="#777777">${escape(guide.label)}</text>`,
    );
  }
  parts.push(
    `<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333333"/>`,
    `<text x="${MARGIN.left + plotW / 2}" y="${height - 14}" text-anchor="middle">${escape(options.xLabel)}</text>`,
    `<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escape(options.yLabel)}</text>`,
  );
  options.series.forEach((series, index) => {
    const color = series.color ?? PALETTE[index % PALETTE.length]!;
    const points = series.points.filter(([x]) => !options.xLog || x > 0);
    if ((series.line ?? true) && points.length > 1) {
      const d = points.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${fixed(toX(x))} ${fixed(toY(y))}`).join(' ');
      parts.push(
        `<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${series.dashed === true ? ' stroke-dasharray="6 4"' : ''}/>`,
      );
    }
    if (series.markers === true) {
      for (const [x, y] of points) parts.push(`<circle cx="${fixed(toX(x))}" cy="${fixed(toY(y))}" r="3.5" fill="${color}"/>`);
    }
    // Legend inside the plot; at the bottom right, lines are right-aligned and stacked upwards.
    const bottom = options.legend === 'bottom-right';
    const ly = bottom ? MARGIN.top + plotH - 16 - (options.series.length - 1 - index) * 18 : MARGIN.top + 16 + index * 18;
    const lx = bottom ? MARGIN.left + plotW - 36 : MARGIN.left + 12;
    parts.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${color}" stroke-width="2"${series.dashed === true ? ' stroke-dasharray="6 4"' : ''}/>`,
      bottom
        ? `<text x="${lx - 6}" y="${ly}" text-anchor="end" dominant-baseline="middle">${escape(series.name)}</text>`
        : `<text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${escape(series.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

/** Points of an empirical CDF of sorted values, thinned to at most `maxPoints` (the tail kept exact). */
export function cdfPoints(sorted: Float64Array, maxPoints = 400): [number, number][] {
  const n = sorted.length;
  if (n === 0) return [];
  const step = Math.max(1, Math.floor(n / maxPoints));
  const points: [number, number][] = [];
  for (let i = 0; i < n; i += step) points.push([sorted[i]!, (i + 1) / n]);
  // The last 1% in full detail: that is where the p99 lives.
  for (let i = Math.max(0, Math.floor(n * 0.99)); i < n; i++) points.push([sorted[i]!, (i + 1) / n]);
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return points;
}

const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');

/** Writes bench/results/<file> and returns its path relative to the repository root, for the report to link. */
export function writePlot(file: string, svg: string): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(path.join(RESULTS_DIR, file), svg);
  return `bench/results/${file}`;
}

function linearTicks(min: number, max: number): number[] {
  const span = max - min || 1;
  const step = niceStep(span / 6);
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let decade = Math.floor(Math.log10(min)); decade <= Math.ceil(Math.log10(max)); decade++) {
    for (const m of [1, 2, 5]) {
      const t = m * 10 ** decade;
      if (t >= min && t <= max) ticks.push(Number(t.toPrecision(12)));
    }
  }
  return ticks;
}

function niceStep(raw: number): number {
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const residual = raw / magnitude;
  return (residual > 5 ? 10 : residual > 2 ? 5 : residual > 1 ? 2 : 1) * magnitude;
}

function niceCeil(value: number): number {
  if (value <= 0) return 1;
  const step = niceStep(value / 6);
  return Math.ceil(value / step) * step;
}

const fixed = (value: number): string => value.toFixed(1);
const label = (value: number): string =>
  Math.abs(value) >= 1000 ? Math.round(value).toLocaleString('en-US') : String(Number(value.toPrecision(4)));
const escape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
