import { NoSuchBucket } from '@aws-sdk/client-s3';
import { NotFoundException, ThrottledException } from '@aws-sdk/client-sns';
import { InvalidMessageContents, QueueDoesNotExist, RequestThrottled } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { classifyEntry, classifyThrown } from '../../src/brokers/aws/classify.js';

const metadata = { httpStatusCode: 400 };

describe('AWS outcome classification (by SDK error names and codes, not by text)', () => {
  it('classifies SDK exceptions: a missing queue, topic or bucket or a malformed message is permanent, throttling retryable', () => {
    expect(classifyThrown(new QueueDoesNotExist({ message: 'gone', $metadata: metadata }), 'send').status).toBe('permanent');
    expect(classifyThrown(new InvalidMessageContents({ message: 'bad', $metadata: metadata }), 'send').status).toBe('permanent');
    expect(
      classifyThrown(new NotFoundException({ message: 'no topic', $metadata: { httpStatusCode: 404 } }), 'publish').status,
    ).toBe('permanent');
    expect(classifyThrown(new NoSuchBucket({ message: 'no bucket', $metadata: { httpStatusCode: 404 } }), 'put').status).toBe(
      'permanent',
    );
    expect(classifyThrown(new RequestThrottled({ message: 'slow down', $metadata: metadata }), 'send')).toEqual({
      status: 'retryable',
      error: 'send: RequestThrottled (HTTP 400): slow down',
    });
    expect(classifyThrown(new ThrottledException({ message: 'slow', $metadata: metadata }), 'publish').status).toBe('retryable');
  });

  it('classifies a socket error (also as the cause of another) as unreachable, and anything unknown as retryable', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    expect(classifyThrown(refused, 'send')).toMatchObject({ status: 'retryable', unreachable: true });
    expect(classifyThrown(new Error('wrapped', { cause: refused }), 'send')).toMatchObject({ unreachable: true });
    expect(classifyThrown(new Error('something odd'), 'send')).toEqual({ status: 'retryable', error: 'send: something odd' });
  });

  it('gives each Failed[] entry its own outcome by its code, the code in the error', () => {
    expect(classifyEntry({ Id: 'm0', Code: 'InvalidMessageContents', SenderFault: true, Message: 'bad' }, 'refused')).toEqual({
      status: 'permanent',
      error: 'refused: InvalidMessageContents (sender fault): bad',
    });
    expect(classifyEntry({ Id: 'm1', Code: 'InternalError', SenderFault: false, Message: 'oops' }, 'refused')).toEqual({
      status: 'retryable',
      error: 'refused: InternalError: oops',
    });
    expect(classifyEntry({ Id: 'm2', Code: 'ThrottlingException', SenderFault: true }, 'refused').status).toBe('retryable');
    expect(classifyEntry({ Id: 'm3', Code: 'KmsThrottled', SenderFault: true }, 'refused').status).toBe('retryable');
    expect(classifyEntry({ Id: 'm4', Code: 'SomethingNew', SenderFault: false }, 'refused').status).toBe('retryable');
    expect(classifyEntry({ Id: 'm5', Code: 'AWS.SimpleQueueService.NonExistentQueue' }, 'refused').status).toBe('permanent');
  });
});
