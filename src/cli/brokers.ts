import net from 'node:net';
import type { Broker } from '../brokers/broker.js';
import { MemoryBroker } from '../brokers/memory.js';
import { RoutingBroker } from '../brokers/routing.js';
import { TxOutboxError } from '../errors.js';
import type { BrokerConfig, Config } from './config.js';
import { CliError, EXIT } from './errors.js';
import type { Redactor } from './redact.js';
import { within } from './within.js';

/** A configured broker: the adapter, and a way to tell whether the broker answers (for /readyz). */
export interface OpenBroker {
  name: string;
  type: BrokerConfig['type'];
  broker: Broker;
  /** Resolves when the broker is reachable now; rejects with the reason otherwise. */
  probe(timeoutMs: number): Promise<void>;
}

function options(config: BrokerConfig): Record<string, unknown> {
  const { type: _type, ...rest } = config;
  return rest;
}

/** Builds one adapter from its config entry (the adapter validates its own options and says what is wrong). */
export async function openBroker(name: string, config: BrokerConfig, onError: (error: Error) => void): Promise<OpenBroker> {
  const given = options(config);
  try {
    switch (config.type) {
      case 'rabbitmq': {
        const { createRabbitMqBroker } = await import('../brokers/rabbitmq.js');
        const broker = createRabbitMqBroker({ name, ...given } as Parameters<typeof createRabbitMqBroker>[0]);
        // connect() reuses the live connection, or opens one: it fails exactly when a publish could not go out.
        return { name, type: config.type, broker, probe: (ms) => within(broker.connect(), ms) };
      }
      case 'nats': {
        const { createNatsBroker } = await import('../brokers/nats.js');
        const broker = createNatsBroker(given as Parameters<typeof createNatsBroker>[0]);
        const servers = [given.servers ?? 'nats://127.0.0.1:4222'].flat() as string[];
        return { name, type: config.type, broker, probe: (ms) => tcpProbe(servers, 4222, ms) };
      }
      case 'kafka': {
        const { createKafkaBroker } = await import('../brokers/kafka.js');
        const broker = createKafkaBroker(given as unknown as Parameters<typeof createKafkaBroker>[0]);
        const brokers = (given.brokers as string[] | undefined) ?? [];
        return {
          name,
          type: config.type,
          broker,
          probe: (ms) =>
            tcpProbe(
              brokers.map((b) => `kafka://${b}`),
              9092,
              ms,
            ),
        };
      }
      case 'redis': {
        const { createRedisBroker } = await import('../brokers/redis.js');
        const broker = createRedisBroker({ onError, ...given } as Parameters<typeof createRedisBroker>[0]);
        const url = (given.url as string | undefined) ?? 'redis://127.0.0.1:6379';
        return { name, type: config.type, broker, probe: (ms) => tcpProbe([url], 6379, ms) };
      }
      case 'mqtt': {
        const { createMqttBroker } = await import('../brokers/mqtt.js');
        const broker = createMqttBroker({ name, onError, ...given } as Parameters<typeof createMqttBroker>[0]);
        return {
          name,
          type: config.type,
          broker,
          probe: async () => {
            if (!broker.connected) throw new Error('not connected to the MQTT broker');
          },
        };
      }
      case 'http': {
        const { createHttpBroker } = await import('../brokers/http.js');
        const broker = createHttpBroker({ name, ...given } as Parameters<typeof createHttpBroker>[0]);
        const urls = [given.url, ...Object.values((given.routes as Record<string, string> | undefined) ?? {})].filter(
          (url): url is string => typeof url === 'string',
        );
        return {
          name,
          type: config.type,
          broker,
          probe: (ms) =>
            tcpProbe(
              urls.map((u) => u.replace('{topic}', 'x')),
              80,
              ms,
            ),
        };
      }
      case 'sqs': {
        const { createSqsBroker } = await import('../brokers/sqs.js');
        const broker = createSqsBroker(given as Parameters<typeof createSqsBroker>[0]);
        const queues = [given.queueUrl, ...Object.values((given.routes as Record<string, string> | undefined) ?? {})];
        return { name, type: config.type, broker, probe: (ms) => tcpProbe(awsEndpoints(given, 'sqs', queues), 443, ms) };
      }
      case 'sns': {
        const { createSnsBroker } = await import('../brokers/sns.js');
        const broker = createSnsBroker(given as Parameters<typeof createSnsBroker>[0]);
        // A topic ARN names its region: arn:aws:sns:<region>:<account>:<name>.
        const topics = [given.topicArn, ...Object.values((given.routes as Record<string, string> | undefined) ?? {})];
        const regions = topics.flatMap((arn) => (typeof arn === 'string' ? [arn.split(':')[3]] : []));
        const urls = regions.map((region) => `https://sns.${region}.amazonaws.com`);
        return { name, type: config.type, broker, probe: (ms) => tcpProbe(awsEndpoints(given, 'sns', urls), 443, ms) };
      }
      case 'memory': {
        if (Object.keys(given).length > 0) {
          throw new CliError(
            `brokers.${name}: a memory broker takes no options (got ${Object.keys(given).join(', ')})`,
            EXIT.config,
          );
        }
        return { name, type: config.type, broker: new MemoryBroker(), probe: async () => {} };
      }
    }
  } catch (error) {
    if (error instanceof TxOutboxError)
      throw new CliError(`Invalid configuration: brokers.${name}: ${error.message}`, EXIT.config);
    throw error;
  }
}

export async function openBrokers(
  config: Config,
  redactor: Redactor,
  onError: (name: string, error: Error) => void,
): Promise<Map<string, OpenBroker>> {
  const opened = new Map<string, OpenBroker>();
  try {
    for (const [name, entry] of Object.entries(config.brokers)) {
      opened.set(name, await openBroker(name, entry, (error) => onError(name, error)));
    }
    return opened;
  } catch (error) {
    await closeBrokers(opened);
    if (error instanceof CliError) throw new CliError(redactor.text(error.message), error.exitCode);
    throw error;
  }
}

export async function closeBrokers(brokers: Map<string, OpenBroker>): Promise<void> {
  await Promise.all([...brokers.values()].map((b) => b.broker.close?.().catch(() => {})));
}

/**
 * The sidecar's router: the configured brokers by their names, routed by the `routes:` section. A topic no route
 * matches is a permanent failure (unless only one broker is configured).
 */
export function routerFor(config: Config, brokers: ReadonlyMap<string, OpenBroker>): RoutingBroker {
  return new RoutingBroker({ brokers: new Map([...brokers].map(([name, open]) => [name, open.broker])), routes: config.routes });
}

/**
 * Where an SQS or SNS adapter connects: its `clientConfig.endpoint` when set (a local emulator, a VPC endpoint),
 * else the given URLs (queue URLs, the regional endpoints of topic ARNs), else the region's public endpoint.
 */
function awsEndpoints(given: Record<string, unknown>, service: 'sqs' | 'sns', urls: readonly unknown[]): string[] {
  const clientConfig = (given.clientConfig ?? {}) as { endpoint?: unknown; region?: unknown };
  if (typeof clientConfig.endpoint === 'string') return [clientConfig.endpoint];
  const known = urls.filter((url): url is string => typeof url === 'string');
  if (known.length > 0) return known;
  const region = typeof clientConfig.region === 'string' ? clientConfig.region : process.env.AWS_REGION;
  return region === undefined ? [] : [`https://${service}.${region}.amazonaws.com`];
}

/** Reachable when a TCP connection to any of the servers opens. */
async function tcpProbe(urls: readonly string[], defaultPort: number, ms: number): Promise<void> {
  const errors: string[] = [];
  for (const url of urls) {
    let host: string;
    let port: number;
    try {
      const parsed = new URL(url.includes('://') ? url : `tcp://${url}`);
      host = parsed.hostname.replace(/^\[|\]$/g, '');
      port = parsed.port === '' ? (parsed.protocol === 'https:' ? 443 : defaultPort) : Number(parsed.port);
    } catch {
      errors.push(`${url}: not a URL`);
      continue;
    }
    try {
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect({ host, port, timeout: ms });
        socket.once('connect', () => (socket.destroy(), resolve()));
        socket.once('error', reject);
        socket.once('timeout', () => (socket.destroy(), reject(new Error(`no answer within ${ms} ms`))));
      });
      return;
    } catch (error) {
      errors.push(`${host}:${port}: ${(error as Error).message}`);
    }
  }
  throw new Error(errors.join('; ') || 'no server configured');
}
