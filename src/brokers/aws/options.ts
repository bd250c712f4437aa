import { z } from 'zod';
import type { OutgoingMessage } from '../broker.js';
import { errorText } from '../errors.js';
import { ownEntry, type Route } from '../route.js';
import type { ClaimCheckOptions } from './claim-check.js';

/** The options txoutbox/sqs and txoutbox/sns share. A destination is a queue URL (SQS) or a topic ARN (SNS). */
export interface AwsBrokerOptions<Client, ClientConfig> {
  /** An SDK client you own (close() leaves it alone). Not allowed together with `clientConfig`. */
  client?: Client;
  /** Options for the SDK client the adapter creates: region, credentials, endpoint... Default: the SDK's own chain. */
  clientConfig?: ClientConfig;
  /** topic → destination, checked first. */
  routes?: Record<string, string>;
  /** topic → destination for topics `routes` does not name; return undefined to fall back to the default destination. */
  route?: (topic: string, message: OutgoingMessage) => string | undefined;
  /**
   * FIFO queues and topics: the MessageGroupId of messages without a key. Default: none, each keyless message is a
   * group of its own (no order among them, full parallelism, as txoutbox promises for keyless messages). Set it to
   * deliver them in order, one at a time: one group is one lane.
   */
  keylessGroupId?: string;
  /** Payloads past the limit go to S3, the message carrying the extended clients' pointer. Off by default. */
  claimCheck?: ClaimCheckOptions;
}

const isFunction = (value: unknown) => typeof value === 'function';
const isObject = (value: unknown) => typeof value === 'object' && value !== null && !Array.isArray(value);

/** The options the SQS and SNS adapters share; `destination` validates a queue URL or a topic ARN. */
export function awsOptionsShape<Client>(destination: z.ZodType<string>, clientName: string) {
  return {
    client: z
      .custom<Client>((value) => isObject(value) && isFunction((value as { send?: unknown }).send), `must be an ${clientName}`)
      .optional(),
    clientConfig: z.custom<Record<string, unknown>>(isObject, `must be an object of ${clientName} options`).optional(),
    routes: z.record(z.string().min(1, 'a topic must not be empty'), destination).optional(),
    route: z.custom<(topic: string, message: OutgoingMessage) => string | undefined>(isFunction, 'must be a function').optional(),
    keylessGroupId: z
      .string()
      .regex(/^[\x21-\x7e]{1,128}$/, 'must be 1-128 printable ASCII characters (a MessageGroupId)')
      .optional(),
    claimCheck: z
      .object({
        bucket: z.string().min(3, 'must name an S3 bucket'),
        client: z.custom<NonNullable<ClaimCheckOptions['client']>>((value) => isObject(value), 'must be an S3Client').optional(),
        clientConfig: z.custom<Record<string, unknown>>(isObject, 'must be an object of S3Client options').optional(),
        keyPrefix: z.string().optional(),
        thresholdBytes: z.number().int().min(1).optional(),
      })
      .strict()
      .optional(),
  };
}

/** Refuses `client` together with `clientConfig`: one says "use mine", the other "make one". */
export function oneClient(value: { client?: unknown; clientConfig?: unknown }, ctx: z.RefinementCtx): void {
  if (value.client !== undefined && value.clientConfig !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['client'], message: 'cannot be given together with clientConfig' });
  }
}

/**
 * The destination of a message: `routes[topic]`, else the `route` function's answer, else `fallback` (the queue URL
 * or topic ARN every other topic goes to); refused when none applies or the answer is not a valid destination.
 */
export function routeByTopic(
  message: OutgoingMessage,
  options: {
    routes?: Record<string, string> | undefined;
    route?: ((topic: string, message: OutgoingMessage) => string | undefined) | undefined;
    fallback: string | undefined;
  },
  kind: string,
  problem: (destination: string) => string | null,
): Route<string> {
  let destination = ownEntry(options.routes, message.topic);
  if (destination === undefined && options.route !== undefined) {
    try {
      destination = options.route(message.topic, message);
    } catch (error) {
      return { refused: `the route function threw for topic "${message.topic}": ${errorText(error)}` };
    }
    if (destination !== undefined && typeof destination !== 'string') {
      return { refused: `the route function returned ${typeof destination} for topic "${message.topic}", not a ${kind}` };
    }
  }
  destination ??= options.fallback;
  if (destination === undefined) return { refused: `no ${kind} for topic "${message.topic}": add it to routes or set a default` };
  const why = problem(destination);
  return why === null ? { to: destination } : { refused: `${kind} "${destination}" for topic "${message.topic}" ${why}` };
}
