/** The PUBLISH properties the adapter sets: the content type, and the headers as user properties. */
export interface PublishProperties {
  contentType: string;
  userProperties: Record<string, string>;
}

const varIntLength = (n: number) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4);

/** The exact size of the PUBLISH packet mqtt.js will write (it does not check the broker's Maximum Packet Size). */
export function publishPacketSize(topic: string, payloadLength: number, qos: number, properties: PublishProperties): number {
  let propertyBytes = 1 + 2 + Buffer.byteLength(properties.contentType);
  for (const [name, value] of Object.entries(properties.userProperties)) {
    propertyBytes += 1 + 2 + Buffer.byteLength(name) + 2 + Buffer.byteLength(value);
  }
  const remaining =
    2 + Buffer.byteLength(topic) + (qos > 0 ? 2 : 0) + varIntLength(propertyBytes) + propertyBytes + payloadLength;
  return 1 + varIntLength(remaining) + remaining;
}
