import type { ConnectionOptions } from 'node:tls';
import type { Mechanism, SASLOptions } from 'kafkajs';
import { z } from 'zod';
import { parseOptions } from '../../config.js';
import { kafkaTopicProblem } from './topics.js';

export type KafkaLogLevel = 'nothing' | 'error' | 'warn' | 'info' | 'debug';

/** Options of `createKafkaBroker`. */
export interface KafkaBrokerOptions {
  /** Seed brokers, as `host:port`. */
  brokers: string[];
  /** Default `txoutbox`. */
  clientId?: string;
  /** txoutbox topic → Kafka topic. Looked up first. */
  routes?: Record<string, string>;
  /** Maps a txoutbox topic that `routes` does not name to a Kafka topic; `undefined` keeps the topic as it is. */
  route?: (topic: string) => string | undefined;
  ssl?: boolean | ConnectionOptions;
  sasl?: SASLOptions | Mechanism;
  /** TCP connect timeout. Default 1000 ms. */
  connectionTimeoutMs?: number;
  /** How long the client waits for any answer from a broker. Default 30 000 ms. */
  requestTimeoutMs?: number;
  /** How long a partition leader waits for the in-sync replicas before answering a produce (acks=-1). Default 30 000 ms. */
  ackTimeoutMs?: number;
  /** kafkajs's own retries inside one publish (bounded, so an abandoned send stops); the relay retries beyond them. Default 5. */
  retries?: number;
  /** Largest estimated size of one produce request; a bigger relay batch is sent in several. Default 1 000 000. */
  maxBatchBytes?: number;
  /** kafkajs log level (to the console). Default `warn`. */
  logLevel?: KafkaLogLevel;
}

const BROKER_ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[^\s:/[\]]+):(\d{1,5})$/;

const kafkaTopicName = z.string().superRefine((name, context) => {
  const problem = kafkaTopicProblem(name);
  if (problem !== null) context.addIssue({ code: 'custom', message: `"${name}" is not a legal Kafka topic name: it ${problem}` });
});

const optionsSchema = z
  .object({
    brokers: z
      .array(
        z.string().refine((address) => {
          const match = BROKER_ADDRESS.exec(address);
          return match !== null && Number(match[1]) >= 1 && Number(match[1]) <= 65_535;
        }, 'must be "host:port"'),
        { error: 'must be an array of "host:port" strings' },
      )
      .min(1, 'must name at least one broker'),
    clientId: z.string().min(1).max(255).default('txoutbox'),
    routes: z.record(z.string(), kafkaTopicName).default({}),
    route: z
      .custom<(topic: string) => string | undefined>(
        (value) => typeof value === 'function',
        'must be a function (topic) => Kafka topic',
      )
      .optional(),
    ssl: z.union([z.boolean(), z.looseObject({})], { error: 'must be a boolean or tls.ConnectionOptions' }).optional(),
    sasl: z.looseObject({ mechanism: z.string().min(1) }, { error: 'must be an object with a mechanism' }).optional(),
    connectionTimeoutMs: z.number().int().min(1).max(600_000).default(1000),
    requestTimeoutMs: z.number().int().min(1).max(600_000).default(30_000),
    ackTimeoutMs: z.number().int().min(1).max(600_000).default(30_000),
    retries: z.number().int().min(1, 'must be at least 1 (the idempotent producer needs retries)').max(100).default(5),
    maxBatchBytes: z.number().int().min(1024).max(1_000_000_000).default(1_000_000),
    logLevel: z.enum(['nothing', 'error', 'warn', 'info', 'debug']).default('warn'),
  })
  .strict();

export interface ResolvedKafkaOptions {
  brokers: string[];
  clientId: string;
  routes: Record<string, string>;
  route: ((topic: string) => string | undefined) | undefined;
  ssl: boolean | ConnectionOptions | undefined;
  sasl: SASLOptions | Mechanism | undefined;
  connectionTimeoutMs: number;
  requestTimeoutMs: number;
  ackTimeoutMs: number;
  retries: number;
  maxBatchBytes: number;
  logLevel: KafkaLogLevel;
}

/** Validates the options (throwing a ConfigError that names every problem) and fills in the defaults. */
export function resolveKafkaOptions(options: KafkaBrokerOptions): ResolvedKafkaOptions {
  const resolved = parseOptions(optionsSchema, options, 'createKafkaBroker');
  return {
    ...resolved,
    route: resolved.route,
    // Passed through to kafkajs as given; zod only checked their outline.
    ssl: options.ssl,
    sasl: options.sasl,
  };
}
