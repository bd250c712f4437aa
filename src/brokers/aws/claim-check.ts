import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import type { OutgoingMessage } from '../broker.js';

/** The pointer class name the AWS extended clients (Java, Python) write and read. */
export const EXTENDED_POINTER_CLASS = 'software.amazon.payloadoffloading.PayloadS3Pointer';
/** The attribute the extended clients set to the payload's size: the current name, then the legacy one they also read. */
export const EXTENDED_SIZE_ATTRIBUTES = ['ExtendedPayloadSize', 'SQSLargePayloadSize'] as const;

/** Where a claim-checked payload lives. */
export interface PayloadPointer {
  bucket: string;
  key: string;
}

/** Large payloads to S3, the message carrying a pointer the AWS extended clients read. */
export interface ClaimCheckOptions {
  /** The bucket the payloads go to. It must exist; objects are never deleted by txoutbox (use a lifecycle rule). */
  bucket: string;
  /** An S3 client you own (close() leaves it alone); or `clientConfig` for one the adapter creates. */
  client?: S3Client;
  clientConfig?: S3ClientConfig;
  /** Prepended to the object key, which is the message id (so a resend overwrites the same object). Default ''. */
  keyPrefix?: string;
  /** Payloads whose message would be larger than this go to S3. Default: the service's limit. */
  thresholdBytes?: number;
}

/** The message body of a claim-checked payload: the extended clients' `[class, {s3BucketName, s3Key}]` pointer. */
export function pointerBody(pointer: PayloadPointer): string {
  return JSON.stringify([EXTENDED_POINTER_CLASS, { s3BucketName: pointer.bucket, s3Key: pointer.key }]);
}

/** The pointer a body holds when it is one (written by txoutbox or an extended client), else null. */
export function parsePointer(body: string): PayloadPointer | null {
  if (!body.startsWith(`["${EXTENDED_POINTER_CLASS}"`)) return null;
  try {
    const parsed: unknown = JSON.parse(body);
    const fields = Array.isArray(parsed) ? (parsed[1] as { s3BucketName?: unknown; s3Key?: unknown }) : undefined;
    if (typeof fields?.s3BucketName !== 'string' || typeof fields.s3Key !== 'string') return null;
    return { bucket: fields.s3BucketName, key: fields.s3Key };
  } catch {
    return null;
  }
}

/** Stores and fetches claim-checked payloads. Loads @aws-sdk/client-s3 only when a claim check is configured. */
export class ClaimCheck {
  private client: Promise<S3Client> | null = null;

  constructor(private readonly options: ClaimCheckOptions) {}

  /** Puts the payload at `keyPrefix + id` and resolves once S3 stored it; rejects with the SDK's error. */
  async put(message: OutgoingMessage, signal: AbortSignal): Promise<PayloadPointer> {
    const { PutObjectCommand } = await import('@aws-sdk/client-s3');
    const pointer = { bucket: this.options.bucket, key: `${this.options.keyPrefix ?? ''}${message.id}` };
    const command = new PutObjectCommand({
      Bucket: pointer.bucket,
      Key: pointer.key,
      Body: message.payload,
      ContentType: message.contentType,
    });
    await (await this.s3()).send(command, { abortSignal: signal });
    return pointer;
  }

  /** The payload a pointer names. */
  async get(pointer: PayloadPointer, signal?: AbortSignal): Promise<Buffer> {
    const { GetObjectCommand } = await import('@aws-sdk/client-s3');
    const answer = await (
      await this.s3()
    ).send(
      new GetObjectCommand({ Bucket: pointer.bucket, Key: pointer.key }),
      signal === undefined ? {} : { abortSignal: signal },
    );
    return Buffer.from(await answer.Body!.transformToByteArray());
  }

  /** Destroys the client it created (a given one stays open). */
  close(): void {
    if (this.options.client !== undefined || this.client === null) return;
    void this.client.then((client) => client.destroy()).catch(() => undefined);
    this.client = null;
  }

  private s3(): Promise<S3Client> {
    const given = this.options.client;
    this.client ??=
      given !== undefined
        ? Promise.resolve(given)
        : import('@aws-sdk/client-s3').then(({ S3Client }) => new S3Client(this.options.clientConfig ?? {}));
    return this.client;
  }
}
