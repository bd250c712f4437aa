const WILDCARDS = /[+#]/;

/**
 * Why `text` cannot travel as an MQTT UTF-8 string, or null. MQTT 5 (1.5.4) lets a receiver close the connection on
 * control characters and non-characters, and Mosquitto does: one such message would cut off everything in flight on
 * the connection and be resent on every reconnect. A lone surrogate would silently become U+FFFD.
 */
export function mqttStringProblem(text: string): string | null {
  if (/^[\x20-\x7e]*$/.test(text)) return null;
  for (let index = 0; index < text.length; index++) {
    const point = text.codePointAt(index)!;
    const at = `U+${point.toString(16).toUpperCase().padStart(4, '0')} at position ${index}`;
    if (point > 0xffff) {
      index++;
      if ((point & 0xfffe) === 0xfffe) return `contains the non-character ${at}`;
      continue;
    }
    if (point >= 0xd800 && point <= 0xdfff) return `contains a lone surrogate (${at}), which is not valid UTF-8`;
    if (point <= 0x1f || (point >= 0x7f && point <= 0x9f)) return `contains the control character ${at}`;
    if ((point >= 0xfdd0 && point <= 0xfdef) || point >= 0xfffe) return `contains the non-character ${at}`;
  }
  if (Buffer.byteLength(text) > 0xffff) return 'is longer than 65,535 bytes';
  return null;
}

/** Why `topic` cannot be published to, or null. mqtt.js does not check, and Mosquitto drops the connection. */
export function mqttTopicProblem(topic: string): string | null {
  if (topic.length === 0) return 'is empty';
  if (WILDCARDS.test(topic)) return "contains a wildcard ('+' or '#'), which only subscriptions may use";
  return mqttStringProblem(topic);
}
