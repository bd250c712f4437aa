import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** `npm run demo` on the embedded default: no database URL, no broker URL, nothing but the installed packages. */
describe('npm run demo', () => {
  it('runs end to end on PGlite and the in-memory broker and tells the story', async () => {
    const env = { ...process.env };
    delete env.OUTBOX_PG_URL;
    delete env.OUTBOX_AMQP_URL;
    const child = spawn('npm', ['run', '--silent', 'demo'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    expect(code, `${stdout}\n${stderr}`).toBe(0);
    expect(stdout).toContain('embedded PostgreSQL (PGlite');
    expect(stdout).toContain('order-2 rolled back (card declined) -> its message is gone too');
    expect(stdout).toContain('orders: 1 row(s), outbox: 1 message(s)');
    expect(stdout).toMatch(/dead-lettered \w+: memory: no queue is bound to 'payments.captured'/);
    expect(stdout).toContain('(the retried one first)');
    // The inbox step: order-1's message delivered twice, applied once.
    const first = /order-1 committed -> message (\w+) is in the outbox/.exec(stdout)?.[1];
    expect(first).toMatch(/^[0-9A-Z]{26}$/);
    expect(stdout).toContain(`the shipping service gets ${first} (order-1) and ships it`);
    expect(stdout).toContain('delivery 1 -> applied; shipments for order-1: 1\n');
    expect(stdout).toContain(`so the broker delivers ${first} again`);
    expect(stdout).toContain('delivery 2 -> skipped as a duplicate (the inbox has this id); shipments for order-1: 1\n');
    expect(stdout).toContain(
      '4 message(s) published, 1 rolled back and never sent, 1 dead-lettered and recovered, outbox empty: true',
    );
  });
});
