import { errorText } from '../errors.js';
import { permanent, retryable, unreachable, type Failure } from '../outcomes.js';

/** Socket-level failures: the service could not be reached at all, which is its state, not the message's fault. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ETIMEDOUT',
  'EPIPE',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/**
 * Error codes (SDK error names and `Failed[]` entry codes; SQS's legacy `AWS.SimpleQueueService.` prefix removed)
 * that no retry changes: the destination does not exist, the message is malformed, or publishing there is denied.
 */
const PERMANENT_CODES = new Set([
  'QueueDoesNotExist',
  'NonExistentQueue',
  'QueueDeletedRecently',
  'InvalidParameterValue',
  'InvalidParameter',
  'InvalidParameterException',
  'ParameterValueInvalid',
  'InvalidMessageContents',
  'MissingParameter',
  'InvalidAttributeName',
  'InvalidAttributeValue',
  'InvalidAddress',
  'InvalidSecurity',
  'UnsupportedOperation',
  'NotFound',
  'NotFoundException',
  'NoSuchBucket',
  'AccessDenied',
  'AccessDeniedException',
  'AuthorizationError',
  'AuthorizationErrorException',
  'KmsDisabled',
  'KMSDisabled',
  'KmsNotFound',
  'KMSNotFound',
  'KmsInvalidState',
  'KMSInvalidState',
  'KmsAccessDenied',
  'KMSAccessDenied',
  'KmsOptInRequired',
  'KMSOptInRequired',
  'KmsInvalidKeyUsage',
  'EndpointDisabled',
]);

/** Codes of a `Failed[]` entry that mean "not now" although SQS or SNS may mark them as the sender's fault. */
const RETRYABLE_ENTRY_CODES = new Set([
  'ThrottlingException',
  'Throttling',
  'RequestThrottled',
  'KmsThrottled',
  'KMSThrottled',
  'KMSThrottlingException',
  'InternalError',
  'InternalFailure',
  'ServiceUnavailable',
]);

const bare = (code: string) => code.replace(/^AWS\.SimpleQueueService\./, '');

/** The SDK's service exception shape: `name` is the error code, `$fault` says whose fault it is. */
interface ServiceError {
  name: string;
  message: string;
  $fault: 'client' | 'server';
  $metadata?: { httpStatusCode?: number };
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).$fault === 'string';
}

/** The first network error code on `error` or its causes (the SDK wraps socket errors), or null. */
function networkCode(error: unknown): string | null {
  let e: unknown = error;
  for (let depth = 0; depth < 5 && e instanceof Error; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
    e = e.cause;
  }
  return null;
}

/**
 * What a call to SQS, SNS or S3 that threw means for the messages it carried, classified by the SDK's error name and
 * fault or the socket error's code, never by message text. Anything unknown is retryable: the safe default.
 */
export function classifyThrown(error: unknown, what: string): Failure {
  const code = networkCode(error);
  if (code !== null) return unreachable(`${what}: cannot reach the service (${code}: ${errorText(error)})`);
  if (isServiceError(error)) {
    const name = bare(error.name);
    const status = error.$metadata?.httpStatusCode;
    const text = `${what}: ${error.name}${status === undefined ? '' : ` (HTTP ${status})`}: ${error.message}`;
    return error.$fault === 'client' && PERMANENT_CODES.has(name) ? permanent(text) : retryable(text);
  }
  if (error instanceof Error && error.name === 'TimeoutError') {
    return retryable(`${what}: no answer in time (outcome unknown; resent with the same id): ${error.message}`);
  }
  return retryable(`${what}: ${errorText(error)}`);
}

/** One entry of a batch answer's `Failed[]`: an outcome of its own, by its code. */
export interface FailedEntry {
  Id?: string | undefined;
  Code?: string | undefined;
  SenderFault?: boolean | undefined;
  Message?: string | undefined;
}

/** A `Failed[]` entry's outcome: retryable when its code says "not now" or the service says it was at fault. */
export function classifyEntry(entry: FailedEntry, what: string): Failure {
  const code = bare(entry.Code ?? 'unknown');
  const text = `${what}: ${entry.Code ?? 'no code'}${entry.SenderFault === true ? ' (sender fault)' : ''}: ${entry.Message ?? ''}`;
  if (RETRYABLE_ENTRY_CODES.has(code)) return retryable(text);
  return entry.SenderFault === true || PERMANENT_CODES.has(code) ? permanent(text) : retryable(text);
}
