import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpBroker } from '../../src/brokers/http.js';
import { outgoing } from '../support/brokers/contract.js';
import { header, WebhookReceiver } from '../support/brokers/http-fixture.js';

const never = () => new AbortController().signal;

describe('http broker: configured headers', () => {
  const receiver = new WebhookReceiver();
  beforeAll(async () => receiver.start());
  afterAll(async () => receiver.stop());

  it('refuses, as permanent, a message whose own header would override a configured one (authorization), and sends nothing', async () => {
    const broker = createHttpBroker({ url: receiver.url('/hooks/{topic}'), headers: { Authorization: 'Bearer configured' } });
    try {
      const forged = outgoing('t', { headers: { authorization: 'Bearer forged' } });
      const plain = outgoing('t', { headers: { 'x-tenant': 'acme' } });
      const [refused, sent] = await broker.publish([forged, plain], { signal: never() });
      expect(refused).toEqual({
        status: 'permanent',
        error: expect.stringMatching(/header "authorization" is set by the HTTP broker's configuration.*rename/),
      });
      expect(sent).toEqual({ status: 'ok' });
      expect(receiver.requests.map((r) => header(r.headers, 'txoutbox-id'))).toEqual([plain.id]);
      expect(header(receiver.requests[0]!.headers, 'authorization')).toBe('Bearer configured');
    } finally {
      await broker.close();
    }
  });
});
