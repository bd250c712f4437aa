import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';

/** Where the SQS bench publishes: fauxqs in a child process of its own, or the endpoint in OUTBOX_SQS_ENDPOINT. */
export interface SqsEmulator {
  endpoint: string;
  /** The emulator's process, to count its CPU as the broker's; null for an endpoint we did not start. */
  pid: number | null;
  version: string;
  stop(): Promise<void>;
}

const FAKE = { region: 'us-east-1', credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' } } as const;

/** The client options for `endpoint` (the emulator checks no credentials; a real endpoint uses the environment's). */
function config(endpoint: string): SQSClientConfig {
  return process.env.OUTBOX_SQS_ENDPOINT === undefined ? { ...FAKE, endpoint } : { endpoint };
}

export const sqsBenchClient = Object.assign((endpoint: string) => new SQSClient(config(endpoint)), { config });

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export async function startSqsEmulator(): Promise<SqsEmulator> {
  const given = process.env.OUTBOX_SQS_ENDPOINT;
  if (given !== undefined) return { endpoint: given, pid: null, version: `SQS at ${given}`, stop: async () => {} };
  // fauxqs exports only its ESM entry (dist/app.js); its CLI sits next to it.
  const root = join(dirname(fileURLToPath(import.meta.resolve('fauxqs'))), '..');
  const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  const port = await freePort();
  const child: ChildProcess = spawn(process.execPath, [join(root, 'dist', 'cli.js')], {
    env: { ...process.env, FAUXQS_PORT: String(port), FAUXQS_LOGGER: 'false' },
    stdio: 'ignore',
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`fauxqs exited with code ${child.exitCode}`);
    if (
      (await fetch(`${endpoint}/health`)
        .then((r) => r.ok)
        .catch(() => false)) === true
    )
      break;
    if (Date.now() > deadline) throw new Error('fauxqs did not answer /health within 30 s');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    endpoint,
    pid: child.pid ?? null,
    version: `fauxqs ${version} (an SQS emulator in Node; in-memory, so its "stored" is not SQS's)`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
