import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';

/** Debian's Chromium (.ci/run installs it); playwright-core downloads no browser of its own. */
export const CHROMIUM = process.env.TXOUTBOX_CHROMIUM ?? '/usr/bin/chromium';

/** Screenshots and other files a test leaves for people to look at (gitignored). */
export const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

export interface TestBrowser {
  context: BrowserContext;
  close(): Promise<void>;
}

/**
 * Headless Chromium with a new, empty profile. Without the background-networking flags Chromium reaches out to
 * Google's services at start, and on a closed network those connections are refused noisily.
 */
export async function launchBrowser(): Promise<TestBrowser> {
  const profile = await mkdtemp(join(tmpdir(), 'txoutbox-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** The path of a screenshot under test-artifacts/<folder>/, creating the folder. */
export async function artifact(folder: string, name: string): Promise<string> {
  const dir = join(ARTIFACTS, folder);
  await mkdir(dir, { recursive: true });
  return join(dir, name);
}
