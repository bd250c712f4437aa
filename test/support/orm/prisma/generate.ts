/**
 * Generates a Prisma client from a schema on first use, so a fresh clone needs nothing but `npm ci` (generated
 * clients are not committed: they belong to the installed Prisma version).
 *
 * `prisma generate` does not run Prisma's schema engine, but the CLI still checks for its binary and downloads it
 * from binaries.prisma.sh when missing. Nothing may download here, so the variable that names a local binary points
 * at one that exists but is never executed, and the checksum check for it is skipped; CHECKPOINT_DISABLE stops the
 * CLI's version check. The client itself needs no engine: Prisma 7 with driver adapters compiles queries in WASM.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const require = createRequire(import.meta.url);
const CONFIG = resolve(dirname(fileURLToPath(import.meta.url)), 'prisma.config.ts');
const STALE_LOCK_MS = 120_000;
const inProcess = new Map<string, Promise<string>>();

/**
 * Generates the client of `schemaFile` into `outputDir` (the schema's generator `output`; `configFile` is the
 * prisma.config.ts to load, an empty one by default) unless a client of this
 * exact schema and Prisma version is already there; returns the path of its `client.ts`. Safe to call from several
 * processes at once (a lock directory serializes them).
 */
export function ensurePrismaClient(schemaFile: string, outputDir: string, configFile = CONFIG): Promise<string> {
  let pending = inProcess.get(outputDir);
  if (pending === undefined) {
    pending = generate(schemaFile, outputDir, configFile).catch((error: unknown) => {
      inProcess.delete(outputDir);
      throw error;
    });
    inProcess.set(outputDir, pending);
  }
  return pending;
}

async function generate(schemaFile: string, outputDir: string, configFile: string): Promise<string> {
  const client = join(outputDir, 'client.ts');
  const stampFile = join(outputDir, '.txoutbox-stamp');
  const cli = require.resolve('prisma/build/index.js');
  const version = (JSON.parse(await readFile(require.resolve('prisma/package.json'), 'utf8')) as { version: string }).version;
  const stamp = createHash('sha256')
    .update(version)
    .update(await readFile(schemaFile))
    .digest('hex');
  const fresh = async () => existsSync(client) && (await readFile(stampFile, 'utf8').catch(() => '')) === stamp;
  if (await fresh()) return client;

  const lock = `${outputDir}.lock`;
  await mkdir(dirname(outputDir), { recursive: true });
  await acquire(lock);
  try {
    if (await fresh()) return client;
    await rm(outputDir, { recursive: true, force: true });
    await run(process.execPath, [cli, 'generate', '--schema', schemaFile, '--config', configFile], {
      env: {
        ...process.env,
        PRISMA_SCHEMA_ENGINE_BINARY: process.platform === 'win32' ? process.execPath : '/bin/false',
        PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING: '1',
        CHECKPOINT_DISABLE: '1',
        PRISMA_HIDE_UPDATE_MESSAGE: '1',
      },
      timeout: 120_000,
    });
    if (!existsSync(client)) throw new Error(`prisma generate wrote no ${client}`);
    await writeFile(stampFile, stamp);
    return client;
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

/** mkdir is atomic: whoever creates the directory holds the lock. A lock older than a generate could take is stale. */
async function acquire(lock: string): Promise<void> {
  for (;;) {
    try {
      await mkdir(lock);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > STALE_LOCK_MS) await rm(lock, { recursive: true, force: true });
      else await new Promise((done) => setTimeout(done, 100));
    }
  }
}
