import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * The files the pages load, all served by the sidecar itself (no CDN at run time): htmx and uPlot from their npm
 * packages, and the dashboard's own script and stylesheet from assets/dashboard/ (shipped with the package).
 */
export interface Asset {
  type: string;
  body: Buffer;
}

const require = createRequire(import.meta.url);
// src/cli/dashboard/ and dist/cli/dashboard/ are both three levels below the package root.
const own = (name: string) => fileURLToPath(new URL(`../../../assets/dashboard/${name}`, import.meta.url));

const FILES: Record<string, { path: () => string; type: string }> = {
  '/assets/htmx.min.js': { path: () => require.resolve('htmx.org/dist/htmx.min.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/uPlot.min.js': { path: () => require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/uPlot.min.css': { path: () => require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
  '/assets/dashboard.js': { path: () => own('dashboard.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/dashboard.css': { path: () => own('dashboard.css'), type: 'text/css; charset=utf-8' },
};

/** Reads every asset once, at start: a missing file is an error then, not on some later page view. */
export async function loadAssets(): Promise<ReadonlyMap<string, Asset>> {
  const assets = new Map<string, Asset>();
  for (const [url, file] of Object.entries(FILES)) assets.set(url, { type: file.type, body: await readFile(file.path()) });
  return assets;
}
