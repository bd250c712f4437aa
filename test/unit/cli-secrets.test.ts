import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/cli/config.js';
import { Redactor, redactUrl } from '../../src/cli/redact.js';

describe('CLI secrets in URL query parameters', () => {
  it('masks password=, sslpassword=, token= and other secret-looking query parameters in any text', () => {
    expect(redactUrl('postgres://h/db?sslmode=require&password=hunter22&application_name=relay')).toBe(
      'postgres://h/db?sslmode=require&password=***&application_name=relay',
    );
    expect(redactUrl('connect failed: mysql://app@db:3306/x?sslpassword=k3y-pass&token=t0k3n#frag')).toBe(
      'connect failed: mysql://app@db:3306/x?sslpassword=***&token=***#frag',
    );
    expect(redactUrl('https://hooks.example/x?api_key=abc123&access_token=zzz&x=1')).toBe(
      'https://hooks.example/x?api_key=***&access_token=***&x=1',
    );
    expect(redactUrl('postgres://h/db?sslmode=require')).toBe('postgres://h/db?sslmode=require');
  });

  it('knows query-parameter secrets of the configuration, also where a driver prints them without the URL', () => {
    const redactor = Redactor.fromConfig({
      databases: [{ url: 'postgres://h/db?password=p%40ss-word-1&sslmode=require' }],
      brokers: { h: { url: 'https://hooks.example/x?token=tok-tok-tok' } },
    });
    expect(redactor.text('password authentication failed (p@ss-word-1, p%40ss-word-1), tok-tok-tok')).toBe(
      'password authentication failed (***, ***), ***',
    );
  });
});

describe('CLI configuration: a value that is one whole ${VAR}', () => {
  const base = (extra: Record<string, unknown>) => ({
    databases: [{ name: 'a', dialect: 'postgres', url: '${DB_URL}' }],
    routes: {},
    ...extra,
  });

  it('stays a string for string fields: a password 0012345678 is not read as the number 12345678, and is redacted', () => {
    const { config, redactor } = parseConfig(
      base({ brokers: { m: { type: 'mqtt', url: 'mqtt://h', username: 'u', password: '${MQTT_PW}', clientId: '${ID}' } } }),
      { DB_URL: 'postgres://h/db', MQTT_PW: '0012345678', ID: '007' },
    );
    expect(config.brokers.m).toMatchObject({ password: '0012345678', clientId: '007' });
    expect(redactor.text('bad password 0012345678')).toBe('bad password ***');
  });

  it('is coerced by the schema of a number or boolean field', () => {
    const { config } = parseConfig(
      base({
        brokers: { m: { type: 'memory' } },
        databases: [{ name: 'a', dialect: 'postgres', url: '${DB_URL}', poolSize: '${POOL}', listen: '${LISTEN}' }],
        relay: { batchSize: '${BATCH}', backoff: { factor: '${FACTOR}' } },
        metrics: { backlogIntervalMs: '${EVERY}' },
      }),
      { DB_URL: 'postgres://h/db', POOL: '7', LISTEN: 'false', BATCH: '0050', FACTOR: '1.5', EVERY: '1000' },
    );
    expect(config.databases[0]).toMatchObject({ poolSize: 7, listen: false });
    expect(config.relay).toMatchObject({ batchSize: 50, backoff: { factor: 1.5 } });
    expect(config.metrics.backlogIntervalMs).toBe(1000);
  });

  it('is refused with the field named when a number field gets text that is no number', () => {
    expect(() =>
      parseConfig(base({ brokers: { m: { type: 'memory' } }, relay: { batchSize: '${BATCH}' } }), {
        DB_URL: 'postgres://h/db',
        BATCH: 'fifty',
      }),
    ).toThrow(/relay\.batchSize: .*number/);
  });
});
